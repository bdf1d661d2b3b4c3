"""ACPI CPU hotplug block at 0x0cd8 (qemu-device-semantics.md, observed-qemu-7.2.md)."""

from __future__ import annotations

from conftest import make_machine

BASE = 0xCD8


def modern(qm):
    qm.outb(BASE, 0)


def test_legacy_bitmap_bytes():
    qm = make_machine(boot=2)
    assert qm.inb(BASE) == 0x03
    assert qm.inw(BASE) == 0x0003 and qm.inl(BASE) == 0x00000003
    assert qm.inb(BASE + 1) == 0
    qm.plug(3)
    assert qm.inb(BASE) == 0x0B


def test_legacy_plug_raises_gpe_without_modern_events():
    qm = make_machine()
    qm.plug(2)
    assert qm.m.lpc.gpe0_sts & 0x04
    modern(qm)
    qm.outl(BASE, 2)
    assert qm.inb(BASE + 4) == 0x01  # present, but the switch starts with no events


def test_switch_to_modern_and_layout(qm):
    modern(qm)
    assert qm.inb(BASE) == 0  # command data 2
    assert qm.inb(BASE + 4) == 0x01  # selector 0: the boot CPU, enabled
    assert qm.inb(BASE + 12) == 0xFF  # past the 12-byte block: unassigned port


def test_plug_sets_insert_and_next_cpu_with_event(qm):
    modern(qm)
    qm.plug(2)
    qm.outl(BASE, 0)
    qm.outb(BASE + 5, 0)
    assert qm.inl(BASE + 8) == 2
    assert qm.inb(BASE + 4) == 0x03
    qm.outb(BASE + 5, 3)
    assert qm.inl(BASE + 8) == 2  # APIC ID
    qm.outb(BASE + 4, 0x02)
    assert qm.inb(BASE + 4) == 0x01


def test_next_with_event_scans_inclusively_and_wraps(qm):
    modern(qm)
    qm.plug(1)
    qm.outl(BASE, 2)
    qm.outb(BASE + 5, 0)
    assert qm.inl(BASE + 8) == 1  # wrapped around from 2
    qm.outl(BASE, 1)
    qm.outb(BASE + 5, 0)
    assert qm.inl(BASE + 8) == 1  # inclusive
    qm.outb(BASE + 4, 0x02)
    qm.outl(BASE, 3)
    qm.outb(BASE + 5, 0)
    assert qm.inl(BASE + 8) == 3  # nothing: selector unchanged


def test_out_of_range_selector_reads_zero_and_ignores_writes(qm):
    modern(qm)
    qm.outl(BASE, 9)
    assert qm.inb(BASE + 4) == 0
    assert qm.inl(BASE + 8) == 0
    qm.outb(BASE + 5, 3)
    qm.outl(BASE, 0)
    assert qm.m.cpuhp.command == 0


def test_unplug_request_eject_and_refusals(qm):
    modern(qm)
    qm.plug(2)
    qm.unplug_request(2)
    qm.outl(BASE, 2)
    assert qm.inb(BASE + 4) == 0x07
    qm.outb(BASE + 4, 0x08)
    assert not qm.m.cpus[2].present
    assert [e.data[0] for e in qm.take_events()] == ["DEVICE_DELETED"]
    assert qm.inb(BASE + 4) == 0x06  # insert and remove survive the eject
    # the boot CPU and empty slots are never ejected nor marked fw_remove
    qm.outl(BASE, 0)
    qm.outb(BASE + 4, 0x08)
    qm.outb(BASE + 4, 0x10)
    assert qm.m.cpus[0].present and qm.inb(BASE + 4) == 0x01
    qm.outl(BASE, 3)
    qm.outb(BASE + 4, 0x10)
    assert qm.inb(BASE + 4) == 0


def test_one_control_action_per_write_first_match_wins(qm):
    modern(qm)
    qm.plug(2)
    qm.unplug_request(2)
    qm.outl(BASE, 2)
    qm.outb(BASE + 4, 0x0E)  # clear insert wins; no eject
    assert qm.m.cpus[2].present and qm.inb(BASE + 4) == 0x05


def test_fw_remove_flag_and_eject_clears_it(qm):
    modern(qm)
    qm.plug(2)
    qm.outl(BASE, 2)
    qm.outb(BASE + 4, 0x02)
    qm.outb(BASE + 4, 0x10)
    assert qm.inb(BASE + 4) == 0x11
    qm.outl(BASE, 0)
    qm.outb(BASE + 5, 0)
    assert qm.inl(BASE + 8) == 2  # fw_remove counts as an event
    qm.outb(BASE + 4, 0x08)
    assert qm.inb(BASE + 4) == 0x00


def test_ost_event_status_emits_acpi_device_ost(qm):
    modern(qm)
    qm.plug(2)
    qm.take_events()
    qm.outl(BASE, 2)
    qm.outb(BASE + 5, 1)
    qm.outl(BASE + 8, 0x01)
    qm.outb(BASE + 5, 2)
    qm.outl(BASE + 8, 0x00)
    (ev,) = qm.take_events()
    assert ev.data == ("ACPI_DEVICE_OST", 2, 1, 0)


def test_commands_above_three_are_ignored(qm):
    modern(qm)
    qm.outb(BASE + 5, 3)
    qm.outb(BASE + 5, 7)
    assert qm.m.cpuhp.command == 3


def test_narrow_and_offset_reads(qm):
    modern(qm)
    qm.plug(2)
    qm.outl(BASE, 2)
    assert qm.inw(BASE + 4) == 0x03 and qm.inl(BASE + 4) == 0x03
    assert qm.inb(BASE + 5) == 0 and qm.inb(BASE + 9) == 0
