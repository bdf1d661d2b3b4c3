"""A benign guest OS: boots its CPUs, handles the ACPI CPU hotplug GPE, onlines and offlines CPUs.

The CPU hotplug GPE handler does what QEMU 7.2's generated AML does (hw/acpi/cpu.c,
build_cpus_aml: CSCN and _EJ0), and the rest is what Linux does with the notifications:
INIT-SIPI-SIPI a new CPU into its own trampoline, _OST the result; offline a CPU (it parks
with interrupts off) before running its eject method.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as FW
from smm_hotplug.hw import cpuhp, lpc
from smm_hotplug.hw.apic import SCI_VECTOR
from smm_hotplug.hw.cpu import DM_FIXED, DM_INIT, DM_SIPI

OS_ENTRY = 0x100000
OS_IRQ = 0x110000
OS_TRAMPOLINE = 0x9000  # SIPI vector 0x09
OS_DATA = 0x200000
OS_GLOBALS = OS_DATA + 0x1000  # pmbase u32, flags u8 (copied from the firmware's tables)
OFFLINE_VECTOR = 0xF1  # "call function" IPI that asks a CPU to go offline
HP = cpuhp.BASE

# _OST codes (ACPI 6.x §6.3.5).
OST_DEVICE_CHECK = 0x01
OST_SUCCESS = 0x00


def online_flag(apic: int) -> int:
    return OS_DATA + 0x10 * apic


def offline_request(apic: int) -> int:
    return OS_DATA + 0x10 * apic + 1


def offline_ack(apic: int) -> int:
    return OS_DATA + 0x10 * apic + 2


DISK_IMAGE = (
    (OS_ENTRY, "os.kernel"),
    (OS_IRQ, "os.irq"),
    (OS_TRAMPOLINE, "os.ap_start"),
)

kernel = program("os.kernel", "os", size=0x1000, doc="OS boot on the BSP")


class KBoot(NamedTuple):
    pmbase: int = 0
    aps: tuple[int, ...] = ()
    idx: int = 0


@kernel.step("entry")
def _read_tables(b, r):
    pmbase, flags, count = b.rd_many([FW.HANDOFF_PMBASE, FW.HANDOFF_FLAGS, FW.HANDOFF_BOOT_CPUS], 4)
    flags &= 0xFF
    count &= 0xFF
    aps = tuple(b.rd_bytes(FW.HANDOFF_BOOT_CPUS + 1, count)) if count else ()
    b.wr_many([(OS_GLOBALS, 4, pmbase), (OS_GLOBALS + 4, 1, flags), (online_flag(b.apic_id), 1, 1)])
    b.note(
        f"OS: booting; firmware tables: PMBASE 0x{pmbase:x}, CPU hotplug SMI "
        f"{'yes' if flags & 1 else 'no'}, firmware-driven eject {'yes' if flags & 2 else 'no'}"
    )
    return "lidt", KBoot(pmbase=pmbase, aps=aps)


@kernel.step("lidt")
def _lidt(b, r: KBoot):
    b.lidt(OS_IRQ)
    return "acpi_enable"


@kernel.step("acpi_enable")
def _acpi_enable(b, r: KBoot):
    b.out(lpc.APM_CNT, 1, lpc.APM_ACPI_ENABLE)  # FADT ACPI_ENABLE: sets SCI_EN
    return "gpe_enable"


@kernel.step("gpe_enable")
def _gpe_enable(b, r: KBoot):
    b.out(r.pmbase + lpc.GPE0_STS + 8, 1, lpc.GPE0_CPU_HOTPLUG)  # GPE0_EN bit 2
    b.note("OS: ACPI enabled, CPU hotplug GPE unmasked")
    return "ap_init"


@kernel.step("ap_init")
def _ap_init(b, r: KBoot):
    if r.idx >= len(r.aps):
        return "booted"
    b.ipi(r.aps[r.idx], DM_INIT)
    return "ap_sipi1"


@kernel.step("ap_sipi1", waits="waits out the INIT-to-SIPI delay while starting a boot CPU")
def _ap_sipi1(b, r: KBoot):
    if not b.init_delay_elapsed(r.aps[r.idx]):
        return None
    b.ipi(r.aps[r.idx], DM_SIPI, OS_TRAMPOLINE >> 12)
    return "ap_sipi2"


@kernel.step("ap_sipi2")
def _ap_sipi2(b, r: KBoot):
    b.ipi(r.aps[r.idx], DM_SIPI, OS_TRAMPOLINE >> 12)
    return "ap_wait"


@kernel.step("ap_wait", waits="waits for a boot CPU to come online")
def _ap_wait(b, r: KBoot):
    if b.rd(online_flag(r.aps[r.idx]), 1) != 1:
        return None
    return "ap_init", r._replace(idx=r.idx + 1)


@kernel.step("booted")
def _booted(b, r):
    b.note("OS: all boot CPUs online; idle")
    return "idle", ()


@kernel.step("idle", waits="is idle in the OS (HLT, interrupts on)")
def _idle(b, r):
    b.sti()
    b.hlt()
    return "idle"


ap_start = program("os.ap_start", "os", size=0x100, doc="OS AP trampoline")


@ap_start.step("entry")
def _ap_online(b, r):
    b.lidt(OS_IRQ)
    b.wr(online_flag(b.apic_id), 1, 1)
    b.note(f"OS: CPU with APIC ID {b.apic_id} online")
    return "idle"


@ap_start.step("idle", waits="is idle in the OS (HLT, interrupts on)")
def _ap_idle(b, r):
    b.sti()
    b.hlt()
    return "idle"


irq = program("os.irq", "os", size=0x1000, doc="OS interrupt handlers and ACPI CPU hotplug methods")


class Cscn(NamedTuple):
    """Locals of the GPE handler and the CPU scan method (\\_SB.CPUS.CSCN)."""

    pmbase: int = 0
    flags: int = 0
    uid: int = 0
    added: tuple[int, ...] = ()
    ejects: tuple[int, ...] = ()
    idx: int = 0


@irq.step("entry", joins=True)
def _dispatch(b, r):
    vector = r[0] if r else None
    if vector == SCI_VECTOR:
        pmbase, flags = b.rd_many([OS_GLOBALS, OS_GLOBALS + 4], 4)
        return "gpe_status", Cscn(pmbase=pmbase, flags=flags & 0xFF)
    if vector == OFFLINE_VECTOR:
        return "offline", ()
    return "iret", ()


@irq.step("iret", joins=True)
def _iret(b, r):
    b.iret()
    return "iret"


@irq.step("gpe_status")
def _gpe_status(b, r: Cscn):
    sts = b.inp(r.pmbase + lpc.GPE0_STS, 1)
    return "gpe_clear" if sts & lpc.GPE0_CPU_HOTPLUG else "iret"


@irq.step("gpe_clear")
def _gpe_clear(b, r: Cscn):
    b.out(r.pmbase + lpc.GPE0_STS, 1, lpc.GPE0_CPU_HOTPLUG)
    b.note("OS: CPU hotplug GPE; scanning CPUs (CSCN)")
    return "scan_sel"


@irq.step("scan_sel")
def _scan_sel(b, r: Cscn):
    if r.uid >= b.cfg.max_cpus:
        return "scan_done"
    b.out(HP + cpuhp.SELECTOR, 4, r.uid)
    return "scan_cmd"


@irq.step("scan_cmd")
def _scan_cmd(b, r: Cscn):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_NEXT_WITH_EVENT)
    return "scan_data"


@irq.step("scan_data")
def _scan_data(b, r: Cscn):
    data = b.inp(HP + cpuhp.DATA, 4)
    if data < r.uid:
        return "scan_done"  # wrapped around: scan complete
    return "scan_flags", r._replace(uid=data)


@irq.step("scan_flags")
def _scan_flags(b, r: Cscn):
    flags = b.inp(HP + cpuhp.FLAGS, 1)
    if flags & cpuhp.F_INSERT:
        return "scan_sel", r._replace(added=(*r.added, r.uid), uid=r.uid + 1)
    if flags & cpuhp.F_REMOVE:
        b.note(f"OS: Notify(CPU {r.uid}, eject request)")
        return "scan_rm_clear", r._replace(ejects=(*r.ejects, r.uid))
    return "scan_done"


@irq.step("scan_rm_clear")
def _scan_rm_clear(b, r: Cscn):
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_REMOVE)
    return "scan_sel", r._replace(uid=r.uid + 1)


@irq.step("scan_done")
def _scan_done(b, r: Cscn):
    if r.added and r.flags & 1:
        b.note(f"OS: new CPUs {list(r.added)}: CPU hotplug SMI (APM_CNT <- 4) before notifying")
        b.out(lpc.APM_CNT, 1, FW.APM_CPU_HOTPLUG)
    return "notify", r._replace(idx=0)


@irq.step("notify")
def _notify(b, r: Cscn):
    if r.idx >= len(r.added):
        return "online", r._replace(idx=0)
    b.note(f"OS: Notify(CPU {r.added[r.idx]}, device check)")
    b.out(HP + cpuhp.SELECTOR, 4, r.added[r.idx])
    return "notify_clear"


@irq.step("notify_clear")
def _notify_clear(b, r: Cscn):
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_INSERT)
    return "notify", r._replace(idx=r.idx + 1)


# OSPM: bring each notified CPU online.
@irq.step("online")
def _online(b, r: Cscn):
    if r.idx >= len(r.added):
        return "eject", r._replace(idx=0)
    apic = b.cfg.apic_id(r.added[r.idx])  # from the CPU object's _MAT
    b.note(f"OS: onlining CPU {r.added[r.idx]} (APIC ID {apic}) with INIT-SIPI-SIPI")
    b.ipi(apic, DM_INIT)
    return "online_sipi1"


@irq.step("online_sipi1", waits="waits out the INIT-to-SIPI delay while onlining a new CPU")
def _online_sipi1(b, r: Cscn):
    apic = b.cfg.apic_id(r.added[r.idx])
    if not b.init_delay_elapsed(apic):
        return None
    b.ipi(apic, DM_SIPI, OS_TRAMPOLINE >> 12)
    return "online_sipi2"


@irq.step("online_sipi2")
def _online_sipi2(b, r: Cscn):
    b.ipi(b.cfg.apic_id(r.added[r.idx]), DM_SIPI, OS_TRAMPOLINE >> 12)
    return "online_wait"


@irq.step("online_wait", waits="waits in the OS for a new CPU to come online")
def _online_wait(b, r: Cscn):
    if b.rd(online_flag(b.cfg.apic_id(r.added[r.idx])), 1) != 1:
        return None
    return "ost_select"


@irq.step("ost_select")
def _ost_select(b, r: Cscn):
    b.out(HP + cpuhp.SELECTOR, 4, r.added[r.idx])
    return "ost_event_cmd"


@irq.step("ost_event_cmd")
def _ost_event_cmd(b, r: Cscn):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_OST_EVENT)
    return "ost_event"


@irq.step("ost_event")
def _ost_event(b, r: Cscn):
    b.out(HP + cpuhp.DATA, 4, OST_DEVICE_CHECK)
    return "ost_status_cmd"


@irq.step("ost_status_cmd")
def _ost_status_cmd(b, r: Cscn):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_OST_STATUS)
    return "ost_status"


@irq.step("ost_status")
def _ost_status(b, r: Cscn):
    b.out(HP + cpuhp.DATA, 4, OST_SUCCESS)
    return "online", r._replace(idx=r.idx + 1)


# OSPM: eject requests — offline the CPU, then evaluate its _EJ0.
@irq.step("eject")
def _eject(b, r: Cscn):
    if r.idx >= len(r.ejects):
        return "iret", ()
    apic = b.cfg.apic_id(r.ejects[r.idx])
    b.note(f"OS: offlining CPU {r.ejects[r.idx]} (APIC ID {apic})")
    b.wr(offline_request(apic), 1, 1)
    return "eject_ipi"


@irq.step("eject_ipi")
def _eject_ipi(b, r: Cscn):
    b.ipi(b.cfg.apic_id(r.ejects[r.idx]), DM_FIXED, OFFLINE_VECTOR)
    return "eject_wait"


@irq.step("eject_wait", waits="waits in the OS for the CPU being removed to go offline")
def _eject_wait(b, r: Cscn):
    if b.rd(offline_ack(b.cfg.apic_id(r.ejects[r.idx])), 1) != 1:
        return None
    return "ej0_select"


@irq.step("ej0_select")
def _ej0_select(b, r: Cscn):
    b.out(HP + cpuhp.SELECTOR, 4, r.ejects[r.idx])
    return "ej0"


@irq.step("ej0")
def _ej0(b, r: Cscn):
    if r.flags & 2:
        b.note(f"OS: _EJ0 CPU {r.ejects[r.idx]}: firmware-driven eject (fw_remove + SMI)")
        b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
        return "ej0_smi"
    b.note(f"OS: _EJ0 CPU {r.ejects[r.idx]}: direct eject")
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    return "ej0_forget"


@irq.step("ej0_smi")
def _ej0_smi(b, r: Cscn):
    b.out(lpc.APM_CNT, 1, FW.APM_CPU_HOTPLUG)
    return "ej0_forget"


@irq.step("ej0_forget")
def _ej0_forget(b, r: Cscn):
    apic = b.cfg.apic_id(r.ejects[r.idx])
    b.wr_many([(online_flag(apic), 1, 0), (offline_request(apic), 1, 0), (offline_ack(apic), 1, 0)])
    return "eject", r._replace(idx=r.idx + 1)


# On the CPU being offlined.
@irq.step("offline")
def _offline(b, r):
    if b.rd(offline_request(b.apic_id), 1) != 1:
        return "iret"
    return "offline_ack"


@irq.step("offline_ack")
def _offline_ack(b, r):
    b.cli()
    b.wr(offline_ack(b.apic_id), 1, 1)
    b.note(f"OS: CPU with APIC ID {b.apic_id} offline (CLI; HLT)")
    return "dead"


@irq.step("dead", waits="is offline in the OS (CLI; HLT), waiting to be ejected")
def _dead(b, r):
    b.cli()
    b.hlt()
    return "dead"
