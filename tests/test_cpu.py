"""Architectural SMM semantics of the CPU model (smm-architecture.md, qemu-device-semantics.md)."""

from __future__ import annotations

import pytest

from smm_hotplug.code import PROGRAMS, program
from smm_hotplug.hw.config import HardwareFeatures, platform_config
from smm_hotplug.hw.cpu import (
    DEFAULT_SMBASE,
    DM_INIT,
    DM_SIPI,
    DM_SMI,
    HALTED,
    RUNNING,
    SS_REVISION_ID,
    SS_SMBASE,
    WAIT_SIPI,
    Cpu,
)
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.platform import Platform
from smm_hotplug.hw.state import set_cpu
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import SMM

# Tiny programs: a handler that relocates to the value in register 0 and RSMs, and a spinner.
if "test.reloc" not in PROGRAMS:
    reloc = program("test.reloc", "firmware", size=0x100)

    @reloc.step("entry")
    def _write(b, r):
        b.wr(b.smbase + SS_SMBASE, 4, 0x7000000)
        return "rsm"

    @reloc.step("rsm")
    def _rsm(b, r):
        b.rsm()
        return "rsm"

    spin = program("test.spin", "os", size=0x100)

    @spin.step("entry")
    def _spin(b, r):
        b.hlt()
        return "entry"

    wait = program("test.wait", "firmware", size=0x100)

    @wait.step("entry")
    def _wait(b, r):
        return None  # blocked forever: a CPU sitting in SMM


def machine(accel="kvm"):
    plat = Platform(platform_config(2, 4, hw=HardwareFeatures(accel=accel)))
    m = plat.power_on()
    m = plat.mem_put(m, 0x9000, Obj("code", "test.spin", 0x100, "os"), SMM, None)
    m = plat.mem_put(m, 0x38000, Obj("code", "test.reloc", 0x100, "firmware"), SMM, None)
    m = set_cpu(m, 1, Cpu(mode=HALTED, pc=(0x9000, "entry"), intr=True))
    return plat, m


def step(plat, m, slot):
    log = Log()
    out = plat.cpu_step(m, slot, log)
    return (out if out is not None else m), log


def test_smi_entry_saves_state_and_enters_at_smbase_plus_0x8000():
    plat, m = machine()
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    c = m.cpus[1]
    assert c.smm and c.pc == (0x38000, "entry") and not c.intr
    assert plat.mem_read(m, DEFAULT_SMBASE + SS_SMBASE, 4, SMM) == DEFAULT_SMBASE
    assert plat.mem_read(m, DEFAULT_SMBASE + SS_REVISION_ID, 4, SMM) == 0x00020064


def test_rsm_reloads_smbase_from_the_save_state_and_resumes():
    plat, m = machine()
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    for _ in range(3):
        m, _ = step(plat, m, 1)
    c = m.cpus[1]
    assert not c.smm and c.smbase == 0x7000000
    assert c.pc == (0x9000, "entry") and c.intr  # back where it was, IF restored


@pytest.mark.parametrize(("accel", "smbase"), [("tcg", DEFAULT_SMBASE), ("kvm", 0x7000000)])
def test_rsm_without_relocation_bit_keeps_smbase_under_tcg_only(accel, smbase):
    plat, m = machine(accel)
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    m = plat.mem_write(m, DEFAULT_SMBASE + SS_REVISION_ID, 4, 0x00000064, SMM, "firmware", None)
    m, _ = step(plat, m, 1)
    m, _ = step(plat, m, 1)
    assert m.cpus[1].smbase == smbase


def test_smis_in_smm_collapse_into_one_taken_after_rsm():
    plat, m = machine()
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    assert m.cpus[1].smi and m.cpus[1].smm
    m, _ = step(plat, m, 1)
    m, _ = step(plat, m, 1)  # RSM
    assert not m.cpus[1].smm and m.cpus[1].smi
    m, _log = step(plat, m, 1)  # the latched SMI, now at the new SMBASE
    assert m.cpus[1].smm and m.cpus[1].pc == (0x7008000, "entry")
    assert not m.cpus[1].smi


def test_kvm_holds_init_in_smm_until_rsm_and_keeps_the_new_smbase():
    plat, m = machine("kvm")
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    m = plat.deliver(m, 1, DM_INIT, 0, Log())
    assert m.cpus[1].smm and m.cpus[1].init
    m, _ = step(plat, m, 1)
    m, _ = step(plat, m, 1)  # RSM
    m, _ = step(plat, m, 1)  # the held INIT
    c = m.cpus[1]
    assert c.mode == WAIT_SIPI and c.smbase == 0x7000000 and not c.smm


def test_tcg_init_in_smm_resets_at_once_and_drops_pending_smi():
    plat, m = machine("tcg")
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m = plat.deliver(m, 1, DM_INIT, 0, Log())
    m, _ = step(plat, m, 1)  # the INIT, before the SMM code's next instruction
    c = m.cpus[1]
    assert c.mode == WAIT_SIPI and not c.smm and not c.smi and c.smbase == DEFAULT_SMBASE


def test_kvm_holds_an_smi_to_a_cpu_waiting_for_sipi_until_started():
    plat, m = machine("kvm")
    m = set_cpu(m, 2, Cpu(mode=WAIT_SIPI))
    m = plat.deliver(m, 2, DM_SMI, 0, Log())
    assert plat.cpu_step(m, 2, Log()) is None
    m = plat.deliver(m, 2, DM_INIT, 0, Log())  # INIT does not drop it
    m = plat.deliver(m, 2, DM_SIPI, 0x09, Log())
    m, _ = step(plat, m, 2)  # one guest entry: INIT, SIPI, and the SMI before the first instruction
    assert m.cpus[2].smm and not m.cpus[2].smi
    assert plat.mem_object(m, DEFAULT_SMBASE + 0xFF78, SMM).value == ("rip", (0x9000, "entry"))


def test_sipi_starts_only_a_waiting_cpu():
    plat, m = machine()
    m = plat.deliver(m, 1, DM_SIPI, 0x20, Log())  # halted in the OS: woken, continues after HLT
    assert m.cpus[1].pc == (0x9000, "entry") and m.cpus[1].mode == RUNNING
    m = plat.deliver(m, 1, DM_INIT, 0, Log())
    m = plat.deliver(m, 1, DM_SIPI, 0x09, Log())
    m, _ = step(plat, m, 1)
    assert m.cpus[1].pc == (0x9000, "entry") and m.cpus[1].mode == RUNNING


def test_executing_non_firmware_code_in_smm_is_flagged():
    plat, m = machine()
    m = plat.mem_put(m, 0x38000, Obj("code", "test.spin", 0x100, "os"), SMM, None)
    m = plat.deliver(m, 1, DM_SMI, 0, Log())
    m, _ = step(plat, m, 1)
    m, log = step(plat, m, 1)
    assert [v.prop for v in log.violations] == ["smm-code-integrity"]


def test_overwriting_firmware_code_makes_it_the_writers_code():
    plat, m = machine()
    m = plat.mem_write(m, 0x38010, 1, 0x90, "cpu", "os", None)
    obj, writer = plat.fetch(m, 0x38000, SMM)
    assert obj.value == "test.reloc" and writer == "os"


@pytest.mark.parametrize("view", ["cpu", "dma"])
def test_claimed_smram_is_isolated_from_non_smm_and_dma(view):
    plat, m = machine()
    m = m._replace(smram_claims=((0x50000, 0x1000),))
    log = Log()
    plat.mem_read(m, 0x50010, 4, view, log)
    assert [v.prop for v in log.violations] == ["smram-isolation"]
    log = Log()
    plat.mem_read(m, 0x50010, 4, SMM, log)
    assert not log.violations
