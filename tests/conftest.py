"""Shared fixtures: a machine driven like QEMU's qtest accelerator (no CPU runs); the hooks that
make a skip of a test CI requires a failure there (tests/required_skips.py)."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest
from required_skips import pytest_configure, pytest_runtest_makereport  # noqa: F401 (hooks)

from smm_hotplug.hw import fw_cfg
from smm_hotplug.hw.config import HardwareFeatures, platform_config
from smm_hotplug.interfaces.qemu.session import QemuMachine

MCH = 0
LPC = 31


def make_machine(boot: int = 1, max_cpus: int = 4, ram_mb: int = 128, **hw) -> QemuMachine:
    return QemuMachine(platform_config(boot, max_cpus, ram_mb=ram_mb, hw=HardwareFeatures(**hw)))


@pytest.fixture
def qm() -> QemuMachine:
    return make_machine()


def fwcfg_dma(qm: QemuMachine, control: int, length: int, address: int, desc_at: int = 0x2000) -> int:
    """Run one fw_cfg DMA transfer from the outside; returns the control word written back."""
    qm.write_bytes(desc_at, struct.pack(">IIQ", control, length, address))
    qm.outl(fw_cfg.PORT_DMA, 0)
    qm.outl(fw_cfg.PORT_DMA + 4, int.from_bytes(desc_at.to_bytes(4, "big"), "little"))
    return struct.unpack(">I", qm.read_bytes(desc_at, 4))[0]


def file_key(qm: QemuMachine, name: str) -> int:
    return fw_cfg.file_key(qm.cfg, name)


def negotiate(qm: QemuMachine, features: int) -> int:
    """Write etc/smi/requested-features by DMA, then select etc/smi/features-ok; its byte."""
    qm.write_bytes(0x1000, struct.pack("<Q", features))
    ctl = (file_key(qm, fw_cfg.FILE_REQUESTED) << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_WRITE
    fwcfg_dma(qm, ctl, 8, 0x1000)
    qm.outw(fw_cfg.PORT_SELECTOR, file_key(qm, fw_cfg.FILE_FEATURES_OK))
    return qm.inb(fw_cfg.PORT_DATA)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`smm-hotplug ARGS` as a user runs it: a separate process, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "smm_hotplug.interfaces.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
