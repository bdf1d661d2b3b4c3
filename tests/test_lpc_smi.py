"""ICH9 APM ports, SMI_EN and SMI feature negotiation (qemu-device-semantics.md)."""

from __future__ import annotations

import pytest
from conftest import LPC, make_machine, negotiate

from smm_hotplug.hw import fw_cfg
from smm_hotplug.hw.management import Refused


def enable_pm(qm, smi_en=0x20):
    qm.pci_write(LPC, 0x40, 4, 0x600)
    qm.pci_write(LPC, 0x44, 1, 0x80)
    qm.outl(0x630, smi_en)


def test_apm_ports_read_back(qm):
    qm.outb(0xB2, 0x5A)
    qm.outb(0xB3, 0xA5)
    assert qm.inb(0xB2) == 0x5A and qm.inb(0xB3) == 0xA5


def test_apm_word_write_splits_into_bytes(qm):
    qm.outw(0xB2, 0x0304)
    assert qm.inb(0xB2) == 0x04 and qm.inb(0xB3) == 0x03


def test_acpi_enable_and_disable_touch_sci_en_only(qm):
    enable_pm(qm)
    qm.outb(0xB2, 2)
    assert qm.inw(0x604) & 1
    assert not any(c.smi for c in qm.m.cpus)
    qm.outb(0xB2, 3)
    assert not qm.inw(0x604) & 1


def test_pmbase_needs_acpi_en(qm):
    qm.pci_write(LPC, 0x40, 4, 0x600)
    assert qm.inl(0x630) == 0xFFFFFFFF  # not decoded yet
    qm.pci_write(LPC, 0x44, 1, 0x80)
    assert qm.inl(0x630) == 0
    assert qm.pci_read(LPC, 0x40, 4) == 0x600
    qm.pci_write(LPC, 0x40, 4, 0xFFFFFFFF)
    assert qm.pci_read(LPC, 0x40, 4) == 0xFF87  # writable bits measured on QEMU 7.2


def test_smi_lock_freezes_gbl_smi_en(qm):
    enable_pm(qm, smi_en=0x21)
    qm.pci_write(LPC, 0xA0, 2, 0x10)
    qm.outl(0x630, 0)
    assert qm.inl(0x630) == 0x01
    qm.pci_write(LPC, 0xA0, 2, 0x00)
    assert qm.pci_read(LPC, 0xA0, 2) == 0x10


def test_apm_smi_needs_apmc_en_and_goes_everywhere_with_broadcast():
    qm = make_machine(boot=2)
    enable_pm(qm, smi_en=0)
    qm.outb(0xB2, 4)
    assert not any(c.smi for c in qm.m.cpus)
    assert negotiate(qm, 0x7) == 1
    enable_pm(qm)
    qm.plug(2)
    qm.outb(0xB2, 4)
    assert [c.smi for c in qm.m.cpus] == [True, True, True, False]


def test_supported_features_file(qm):
    qm.outw(fw_cfg.PORT_SELECTOR, fw_cfg.file_key(qm.cfg, fw_cfg.FILE_SUPPORTED))
    assert bytes(qm.inb(fw_cfg.PORT_DATA) for _ in range(8)) == bytes([7, 0, 0, 0, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "request_,ok",
    [(0x0, 1), (0x1, 1), (0x3, 1), (0x7, 1), (0x5, 0), (0x2, 0), (0x4, 0), (0x6, 0), (0x8, 0), (0xF, 0)],
)
def test_negotiation_rules(qm, request_, ok):
    assert negotiate(qm, request_) == ok
    assert qm.m.lpc.smi_negotiated == (request_ if ok else 0)


def test_negotiation_locks_after_success_and_can_retry_after_rejection(qm):
    assert negotiate(qm, 0x5) == 0
    assert negotiate(qm, 0x3) == 1
    assert negotiate(qm, 0x7) == 1  # locked: still 0x3
    assert qm.m.lpc.smi_negotiated == 0x3


def test_data_port_writes_are_ignored(qm):
    key = fw_cfg.file_key(qm.cfg, fw_cfg.FILE_REQUESTED)
    qm.outw(fw_cfg.PORT_SELECTOR, key)
    qm.outb(fw_cfg.PORT_DATA, 0x07)
    qm.outw(fw_cfg.PORT_SELECTOR, key)
    assert qm.inb(fw_cfg.PORT_DATA) == 0


def test_plug_refused_with_broadcast_only(qm):
    assert negotiate(qm, 0x1) == 1
    with pytest.raises(Refused, match="cpu hotplug with SMI wasn't enabled by firmware"):
        qm.plug(2)


def test_unplug_refusals(qm):
    assert negotiate(qm, 0x3) == 1
    qm.plug(2)
    with pytest.raises(Refused, match="not supported device type: qemu64-x86_64-cpu"):
        qm.unplug_request(2)  # legacy hotplug interface cannot unplug CPUs
    qm.outb(0xCD8, 0)  # switch to the modern interface
    with pytest.raises(Refused, match="cpu hot-unplug with SMI wasn't enabled by firmware"):
        qm.unplug_request(2)


def test_plug_and_unplug_allowed_when_nothing_negotiated(qm):
    """Without SMI features QEMU refuses nothing: the CPU is plugged with an insert event and the
    CPU hotplug GPE, and the unplug request raises a remove event (the CPU stays until ejected)."""
    assert qm.m.lpc.smi_negotiated == 0
    qm.outb(0xCD8, 0)  # modern interface: unplug is supported
    qm.plug(3)
    assert qm.m.cpus[3].present
    assert (qm.m.cpuhp.insert, qm.m.cpuhp.remove) == (1 << 3, 0)
    assert qm.m.lpc.gpe0_sts & 4  # GPE0 bit 2: CPU hotplug
    qm.unplug_request(3)
    assert qm.m.cpus[3].present
    assert qm.m.cpuhp.remove == 1 << 3
