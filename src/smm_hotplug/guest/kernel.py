"""A benign guest OS, as Linux 6.1 runs on QEMU 7.2: boot, the AP trampoline and the idle loop.

The OS is three programs besides this one: ``os.irq`` (guest/acpi.py) takes the interrupts —
the ACPI SCI, whose CPU hotplug GPE runs QEMU's AML (CSCN) on CPU 0, and the IPIs that wake a
CPU or take it offline; ``os.hotplug`` (guest/hotplug.py) is the ordered hotplug worker that
acts on the notifications: _STA and _OST of a new CPU, onlining it with INIT-SIPI-SIPI, and the
eject path.  Its memory and the data its CPUs share are in guest/osmem.py.

A CPU with nothing to do sits in the idle loop: it runs the hotplug worker when the scheduler
put the worker on it, else halts with interrupts enabled (STI; HLT) until an interrupt comes.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import acpi, hotplug
from smm_hotplug.guest.osmem import (
    OS_ENTRY,
    OS_GLOBALS,
    OS_HOTPLUG,
    OS_IRQ,
    OS_TRAMPOLINE,
    offline_ack,
    offline_request,
    online_flag,
    queue,
)
from smm_hotplug.hw import lpc
from smm_hotplug.hw.cpu import DM_INIT, DM_SIPI

# What the rest of the model reads of the OS (the world, adversaries, hard cases).
__all__ = ["DISK_IMAGE", "OS_ENTRY", "Cscn", "offline_ack", "offline_request", "online_flag"]
Cscn = acpi.Cscn

DISK_IMAGE = (
    (OS_ENTRY, "os.kernel"),
    (OS_IRQ, acpi.irq.name),
    (OS_HOTPLUG, hotplug.worker.name),
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


def idle(b, r, home: int):
    """The idle loop of a CPU whose idle code is at ``home``: run the hotplug worker if the
    scheduler put it here, else STI; HLT (one step: no wake-up is lost in between).  It joins
    the step before it: it only reads the OS's own queue, and a CPU the worker is put on later
    gets a reschedule IPI anyway."""
    q = queue(b)
    if q.worker == b.slot and q.items:
        b.jump(OS_HOTPLUG, "next", hotplug.Work(home=home))
        return "idle"
    b.sti()
    b.hlt()
    return "idle"


@kernel.step("idle", joins=True, waits="is idle in the OS (HLT, interrupts on)")
def _idle(b, r):
    return idle(b, r, OS_ENTRY)


ap_start = program("os.ap_start", "os", size=0x100, doc="OS AP trampoline")


@ap_start.step("entry")
def _ap_online(b, r):
    b.lidt(OS_IRQ)
    b.wr(online_flag(b.apic_id), 1, 1)
    b.note(f"OS: CPU with APIC ID {b.apic_id} online")
    return "idle"


@ap_start.step("idle", joins=True, waits="is idle in the OS (HLT, interrupts on)")
def _ap_idle(b, r):
    return idle(b, r, OS_TRAMPOLINE)
