"""QEMU's ACPI CPU hotplug register block at I/O 0x0cd8.

Legacy interface: a 32-byte read-only bitmap of present APIC IDs (hw/acpi/cpu_hotplug.c);
writing 0 to its first byte switches, one way, to the modern 12-byte interface
(docs/specs/acpi_cpu_hotplug.rst, hw/acpi/cpu.c).  Nothing here is reset by a system reset.

The device's state, its register blocks (``LEGACY_OPS``, ``MODERN_OPS``) and the hooks the
machine runs on plug and unplug.  It sees the rest of the machine only through its links:
the configuration (APIC IDs) and which slots hold a CPU (QEMU's AcpiCpuStatus.cpu).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.config import PlatformConfig
from smm_hotplug.hw.effects import NONE, Effects, Eject, FirmwareRemove, Note
from smm_hotplug.hw.iospace import Ops
from smm_hotplug.hw.vmstate import Vmstate

BASE = 0x0CD8
LEGACY_LEN = 32  # ACPI_GPE_PROC_LEN
MODERN_LEN = 12  # ACPI_CPU_HOTPLUG_REG_LEN

# Modern register offsets.
SELECTOR = 0x0  # write: CPU selector (u32); read: command data 2 (u32)
FLAGS = 0x4  # u8 read: flags / write: control
COMMAND = 0x5  # u8 write
DATA = 0x8  # u32 read/write: command data

# Flags (read) and control (write) bits.
F_ENABLED = 0x01
F_INSERT = 0x02  # read: insert event pending; write 1: clear it
F_REMOVE = 0x04  # read: remove event pending; write 1: clear it
F_EJECT = 0x08  # write 1: eject the selected CPU (reads 0)
F_FW_REMOVE = 0x10  # read: firmware handles the removal; write 1: set it

# Commands.
CMD_GET_NEXT_WITH_EVENT = 0
CMD_OST_EVENT = 1
CMD_OST_STATUS = 2
CMD_GET_ARCH_ID = 3
CMD_MAX = 4

# Design "hotplug-smbase-reg": a per-slot SMBASE register that only SMM may write.
SMBASE_REG = 0xC  # u32, present only with that hardware feature
SMBASE_REG_LEN = 4

# Fixes of this device QEMU 7.2 has, by history-catalog id (``HardwareFeatures.reverted`` takes one
# out; designs/history.py tells their story).  Both came with "acpi: cpuhp: introduce 'firmware
# performs eject' status/control bits" (QEMU 6.0), changed in review before it was merged:
# command 0 also stops at a CPU whose firmware-remove bit is set (PATCH v2, 2020-12-07) ...
FIX_GET_NEXT_FW_REMOVE = "qemu-cpuhp-getnext-fw-remove"
# ... and an eject clears that bit, which writing 1 now only sets (PATCH v1, 2020-12-04; the RFC of
# 2020-11-24 left it set by an eject and toggled it on each write).
FIX_EJECT_CLEARS_FW_REMOVE = "qemu-cpuhp-eject-clears-fw-remove"

# _OST values QEMU forwards in ACPI_DEVICE_OST (ACPI 6.x table 6-196 and 6-197).
OST_EV_INSERT = 0x01
OST_EV_EJECT = 0x03
OST_ST_SUCCESS = 0x00


class CpuHp(NamedTuple):
    modern: bool = False
    selector: int = 0
    command: int = 0
    insert: int = 0  # bit per slot
    remove: int = 0
    fw_remove: int = 0
    ost: tuple[tuple[int, int, int], ...] = ()  # (slot, event, status), sorted by slot
    smbase_regs: tuple[int, ...] = ()


def initial(max_cpus: int, smbase_regs: bool) -> CpuHp:
    return CpuHp(smbase_regs=(0,) * max_cpus if smbase_regs else ())


def has(mask: int, slot: int) -> bool:
    return bool(mask >> slot & 1)


def set_bit(mask: int, slot: int, on: bool) -> int:
    return mask | (1 << slot) if on else mask & ~(1 << slot)


def legacy_read_byte(present_apic_ids: frozenset[int], offset: int) -> int:
    value = 0
    for bit in range(8):
        if offset * 8 + bit in present_apic_ids:
            value |= 1 << bit
    return value


def flags(hp: CpuHp, slot: int, present: bool) -> int:
    return (
        (F_ENABLED if present else 0)
        | (F_INSERT if has(hp.insert, slot) else 0)
        | (F_REMOVE if has(hp.remove, slot) else 0)
        | (F_FW_REMOVE if has(hp.fw_remove, slot) else 0)
    )


def next_with_event(hp: CpuHp, max_cpus: int, reverted: frozenset[str] = frozenset()) -> int:
    """Command 0: scan from the selector inclusive, wrapping once; selector kept if none.  A CPU
    has an event when it is inserting, removing or (QEMU 7.2; not as first posted) to be removed
    by the firmware."""
    events = hp.insert | hp.remove
    if FIX_GET_NEXT_FW_REMOVE not in reverted:
        events |= hp.fw_remove
    it = hp.selector
    while True:
        if has(events, it):
            return it
        it = it + 1 if it + 1 < max_cpus else 0
        if it == hp.selector:
            return hp.selector


def set_ost(hp: CpuHp, slot: int, event: int | None = None, status: int | None = None) -> CpuHp:
    cur = {s: (e, st) for s, e, st in hp.ost}
    e, st = cur.get(slot, (0, 0))
    cur[slot] = (e if event is None else event, st if status is None else status)
    return hp._replace(ost=tuple(sorted((s, e, st) for s, (e, st) in cur.items())))


def ost_of(hp: CpuHp, slot: int) -> tuple[int, int]:
    for s, e, st in hp.ost:
        if s == slot:
            return e, st
    return 0, 0


# -- hooks the machine runs (acpi_cpu_plug_cb, acpi_cpu_unplug_request_cb) ----------------------
def plug_cb(hp: CpuHp, slot: int) -> CpuHp:
    """A CPU was plugged into ``slot``: an insert event (the legacy bitmap just shows it)."""
    return hp._replace(insert=set_bit(hp.insert, slot, True)) if hp.modern else hp


def unplug_request_cb(hp: CpuHp, slot: int) -> CpuHp:
    return hp._replace(remove=set_bit(hp.remove, slot, True))


# -- registers ---------------------------------------------------------------------------------
class Links(NamedTuple):
    cfg: PlatformConfig
    present: int  # bit per slot that holds a CPU


def legacy_read(hp: CpuHp, links: Links, offset: int, size: int) -> tuple[CpuHp, int, Effects]:
    ids = links.cfg.apic_ids
    present = frozenset(ids[s] for s in range(len(ids)) if has(links.present, s))
    return hp, legacy_read_byte(present, offset), NONE


def legacy_write(hp: CpuHp, links: Links, offset: int, size: int, value: int) -> tuple[CpuHp, Effects]:
    """Writing 0 to the first byte switches to the modern interface (acpi_switch_to_modern_cphp)."""
    if offset == 0 and value == 0:
        modern = initial(links.cfg.max_cpus, False)._replace(modern=True, smbase_regs=hp.smbase_regs)
        return modern, (Note("hw", "CPU hotplug block switched to the modern interface"),)
    return hp, NONE


def read(hp: CpuHp, links: Links, offset: int, size: int) -> tuple[CpuHp, int, Effects]:
    """cpu_hotplug_rd: everything reads 0 while the selector names no CPU."""
    cfg = links.cfg
    sel = hp.selector
    if sel >= cfg.max_cpus:
        return hp, 0, NONE
    if offset == FLAGS:
        return hp, flags(hp, sel, has(links.present, sel)), NONE
    if offset == DATA:
        if hp.command == CMD_GET_NEXT_WITH_EVENT:
            return hp, sel, NONE
        if hp.command == CMD_GET_ARCH_ID:
            return hp, cfg.apic_id(sel) & 0xFFFFFFFF, NONE
        return hp, 0, NONE
    if offset == SELECTOR and hp.command == CMD_GET_ARCH_ID:  # command data 2
        return hp, cfg.apic_id(sel) >> 32, NONE
    return hp, 0, NONE


def write(hp: CpuHp, links: Links, offset: int, size: int, value: int) -> tuple[CpuHp, Effects]:
    """cpu_hotplug_wr."""
    n = links.cfg.max_cpus
    if offset == SELECTOR:
        return hp._replace(selector=value), NONE
    sel = hp.selector
    if sel >= n:
        return hp, NONE
    if offset == FLAGS:
        # One action per write, the first bit that is set wins.
        if value & F_INSERT:
            return hp._replace(insert=set_bit(hp.insert, sel, False)), NONE
        if value & F_REMOVE:
            return hp._replace(remove=set_bit(hp.remove, sel, False)), NONE
        occupied = sel != 0 and has(links.present, sel)  # the boot CPU is never ejected
        rfc = FIX_EJECT_CLEARS_FW_REMOVE in links.cfg.hw.reverted
        if value & F_EJECT:
            if not occupied:
                return hp, NONE
            if rfc:  # as in the RFC: the eject leaves the bit as it is
                return hp, (Eject(sel),)
            return hp._replace(fw_remove=set_bit(hp.fw_remove, sel, False)), (Eject(sel),)
        if value & F_FW_REMOVE and rfc:  # as in the RFC: each write flips the bit, in any slot
            on = not has(hp.fw_remove, sel)
            effects = (FirmwareRemove(sel),) if on else NONE
            return hp._replace(fw_remove=set_bit(hp.fw_remove, sel, on)), effects
        if value & F_FW_REMOVE and occupied:
            return hp._replace(fw_remove=set_bit(hp.fw_remove, sel, True)), (FirmwareRemove(sel),)
        return hp, NONE
    if offset == COMMAND:
        if value < CMD_MAX:
            hp = hp._replace(command=value)
            if value == CMD_GET_NEXT_WITH_EVENT:
                hp = hp._replace(selector=next_with_event(hp, n, links.cfg.hw.reverted))
        return hp, NONE
    if offset == DATA:
        if hp.command == CMD_OST_EVENT:
            return set_ost(hp, sel, event=value), NONE
        if hp.command == CMD_OST_STATUS:
            hp = set_ost(hp, sel, status=value)
            event, status = ost_of(hp, sel)
            text = f"ACPI_DEVICE_OST slot {sel} event 0x{event:x} status 0x{status:x}"
            return hp, (Note("qmp", text, data=("ACPI_DEVICE_OST", sel, event, status)),)
    return hp, NONE


LEGACY_OPS = Ops("acpi-cpu-hotplug-legacy", LEGACY_LEN, legacy_read, legacy_write, valid_max=1)
MODERN_OPS = Ops("acpi-cpu-hotplug", MODERN_LEN, read, write)


# -- live migration (hw/acpi/ich9.c subsection ich9_pm/cpuhp, hw/acpi/cpu.c vmstate_cpu_hotplug) --
def _sent(hp: CpuHp) -> tuple[str, ...]:
    """Sent only in the modern interface; ``modern`` stands for the subsection being there (its
    pre_load switches the destination to a fresh modern block).  Per CPU vmstate_cpuhp_sts has
    is_inserting, is_removing, ost_event and ost_status — not fw_remove, which the destination's
    fresh array has clear: a firmware-remove request the firmware has not yet collected is lost.
    Which slots hold a CPU is the destination's own (its -device list)."""
    if not hp.modern:
        return ()
    # smbase_regs (design hotplug-smbase-reg) has no QEMU counterpart; a device that had these
    # registers would list them, so they travel.
    return ("modern", "selector", "command", "insert", "remove", "ost", "smbase_regs")


VMSTATE = Vmstate("ich9_pm/cpuhp", _sent)
