"""The OS's interrupt handlers: the ACPI SCI with QEMU 7.2's CPU hotplug AML, wake-ups, offlining.

SCI (CPU 0, where the modelled IOAPIC routes it): the GPE handler reads GPE0_STS, clears the
CPU hotplug bit (an edge GPE is cleared before its method runs: ACPICA evgpe.c,
acpi_ev_gpe_dispatch) and runs ``\\_GPE._E02``, i.e. ``\\_SB.CPUS.CSCN`` as QEMU 7.2 generates it
(hw/acpi/cpu.c, build_cpus_aml; register by register in /work/notes/accel-rules.md D.1):

* Acquire CPLK; from uid 0, while an event was found: CSEL = uid, CCMD = 0 (get next CPU with
  an event), read CDAT — below uid: the scan wrapped, done — then read CDAT again as the new uid;
  read CINS: a new CPU is remembered; else read CRMV: Notify(CPU, Eject Request) and clear CRMV;
* with SMI on CPU hotplug negotiated and CPUs added: write 4 to APM_CNT (0xB2) *before* any
  Notify of a new CPU (the firmware relocates them in that SMI);
* for each new CPU Notify(CPU, Device Check), CSEL = uid, clear CINS; Release CPLK.

Linux runs the GPE method and the Notify handlers on CPU 0 (drivers/acpi/osl.c,
acpi_os_execute: kacpid and kacpi_notify are bound to CPU 0); a Notify of a CPU queues hotplug
work on the ordered ``kacpi_hotplug`` workqueue (acpi_bus_notify -> acpi_hotplug_schedule), whose
worker (guest/hotplug.py) may run on any CPU and waits until CPU 0 is done with the event.  Here
the method runs in the interrupt's context with interrupts off: it preempts what CPU 0 was doing,
which is never an AML method (the worker evaluates each method with interrupts off, so the
SCI waits for its Release; a kacpid thread would sleep on CPLK instead, to the same effect).
At the end CPU 0 wakes the worker (a reschedule IPI) if it is not running.

The other handlers: a reschedule IPI only returns (the idle loop then finds the worker); a
call-function IPI asking this CPU to go offline parks it for good (hlt_play_dead: CLI; HLT).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest.osmem import (
    ACPI_BUSY,
    DEVICE_CHECK,
    EJECT_REQUEST,
    OFFLINE_VECTOR,
    OS_GLOBALS,
    WAKE_VECTOR,
    acquire_cplk,
    offline_ack,
    offline_request,
    pick_worker,
    queue,
    release_cplk,
    set_queue,
)
from smm_hotplug.hw import cpuhp, lpc
from smm_hotplug.hw.apic import SCI_VECTOR
from smm_hotplug.hw.cpu import DM_FIXED

HP = cpuhp.BASE
# The AML is QEMU's (build_cpus_aml), so its fixes are QEMU's, by history-catalog id
# (``HardwareFeatures.reverted`` takes one out): CSCN selects each new CPU again before clearing
# its insert event ("x68: acpi: trigger SMI before sending hotplug Notify event to OSPM", v5 of
# 2020-09-07 after Laszlo Ersek's review of v2; QEMU 5.2).  v2-v4 wrote CINS without CSEL.
FIX_CINS_RESELECT = "qemu-cpuhp-cins-reselect"
CNEW_MAX = 255  # CSCN's package of new CPUs; a full one is handled, then the scan goes on
FLAG_HOTPLUG_SMI = 1  # OS_GLOBALS + 4, bit 0: the firmware negotiated SMI on CPU hotplug

irq = program("os.irq", "os", size=0x1000, doc="OS interrupt handlers; the CPU hotplug GPE (QEMU's CSCN)")


class Cscn(NamedTuple):
    """Locals of the GPE handler and the CPU scan method (\\_SB.CPUS.CSCN)."""

    pmbase: int = 0
    flags: int = 0
    uid: int = 0
    added: tuple[int, ...] = ()  # CNEW: CPUs with an insert event, in scan order
    idx: int = 0
    more: bool = False  # CNEW was full: after notifying, the scan goes on from uid (has_job)
    wake: int | None = None  # the CPU to wake for the hotplug worker


@irq.step("entry")
def _dispatch(b, r):
    vector = r[0] if r else None
    if vector == SCI_VECTOR:
        pmbase, flags = b.rd_many([OS_GLOBALS, OS_GLOBALS + 4], 4)
        b.wr(ACPI_BUSY, 1, 1)
        return "gpe_status", Cscn(pmbase=pmbase, flags=flags & 0xFF)
    if vector == OFFLINE_VECTOR:
        return "offline", ()
    return "iret", ()  # WAKE_VECTOR and anything else: the interrupted code carries on


@irq.step("iret", joins=True)
def _iret(b, r):
    b.iret()
    return "iret"


@irq.step("gpe_status", joins=True)
def _gpe_status(b, r: Cscn):
    sts = b.inp(r.pmbase + lpc.GPE0_STS, 1)
    return "gpe_clear" if sts & lpc.GPE0_CPU_HOTPLUG else "finish"


@irq.step("gpe_clear")
def _gpe_clear(b, r: Cscn):
    b.out(r.pmbase + lpc.GPE0_STS, 1, lpc.GPE0_CPU_HOTPLUG)
    b.note("OS: CPU hotplug GPE; scanning CPUs (CSCN)")
    return "scan_lock"


# -- CSCN ---------------------------------------------------------------------------------------
@irq.step("scan_lock", waits="waits for the ACPI CPU hotplug mutex (CPLK) to start the CPU scan")
def _scan_lock(b, r: Cscn):
    if not acquire_cplk(b):
        return None
    return _scan_select(b, r)


@irq.step("scan_sel")
def _scan_sel(b, r: Cscn):
    return _scan_select(b, r)


def _scan_select(b, r: Cscn):
    if r.uid >= b.cfg.max_cpus:
        return _scan_end(b, r)
    b.out(HP + cpuhp.SELECTOR, 4, r.uid)
    return "scan_cmd", r


@irq.step("scan_cmd")
def _scan_cmd(b, r: Cscn):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_NEXT_WITH_EVENT)
    return "scan_data"


@irq.step("scan_data")
def _scan_data(b, r: Cscn):
    if b.inp(HP + cpuhp.DATA, 4) < r.uid:
        return _scan_end(b, r)  # wrapped around: scan complete
    if len(r.added) == CNEW_MAX:
        return _scan_end(b, r._replace(more=True))
    return "scan_uid"


@irq.step("scan_uid")
def _scan_uid(b, r: Cscn):
    return "scan_ins", r._replace(uid=b.inp(HP + cpuhp.DATA, 4))  # Local0 = CDAT, read again


@irq.step("scan_ins")
def _scan_ins(b, r: Cscn):
    if b.inp(HP + cpuhp.FLAGS, 1) & cpuhp.F_INSERT:
        return "scan_sel", r._replace(added=(*r.added, r.uid), uid=r.uid + 1)
    return "scan_rm"


@irq.step("scan_rm")
def _scan_rm(b, r: Cscn):
    if not b.inp(HP + cpuhp.FLAGS, 1) & cpuhp.F_REMOVE:
        return _scan_end(b, r)  # no event here: the loop ends
    b.note(f"OS: Notify(CPU {r.uid}, eject request)")
    _queue_work(b, EJECT_REQUEST, r.uid)
    return "scan_rm_clear"


@irq.step("scan_rm_clear")
def _scan_rm_clear(b, r: Cscn):
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_REMOVE)
    return "scan_sel", r._replace(uid=r.uid + 1)


def _scan_end(b, r: Cscn):
    """After the scan loop: the hotplug SMI if CPUs were added, then their notifications."""
    if r.added and r.flags & FLAG_HOTPLUG_SMI:
        return "scan_smi", r
    return _notify(b, r._replace(idx=0))


@irq.step("scan_smi")
def _scan_smi(b, r: Cscn):
    b.note(f"OS: new CPUs {list(r.added)}: CPU hotplug SMI (APM_CNT <- 4) before notifying")
    b.out(lpc.APM_CNT, 1, FW.APM_CPU_HOTPLUG)
    return _notify(b, r._replace(idx=0))


def _notify(b, r: Cscn):
    if r.idx < len(r.added):
        return "notify", r
    if r.more:  # the outer loop: a new package, from where the scan stopped
        return "scan_sel", r._replace(added=(), idx=0, more=False)
    release_cplk(b)
    return _finish_event(b, r)


@irq.step("notify")
def _notify_sel(b, r: Cscn):
    uid = r.added[r.idx]
    b.note(f"OS: Notify(CPU {uid}, device check)")
    _queue_work(b, DEVICE_CHECK, uid)
    if FIX_CINS_RESELECT in b.cfg.hw.reverted:
        return "notify_clear"
    b.out(HP + cpuhp.SELECTOR, 4, uid)
    return "notify_clear"


@irq.step("notify_clear")
def _notify_clear(b, r: Cscn):
    if FIX_CINS_RESELECT in b.cfg.hw.reverted:
        uid = r.added[r.idx]
        b.note(f"OS: CINS = 1 meant for CPU {uid}, without selecting it (hits the CPU selected last)")
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_INSERT)
    return _notify(b, r._replace(idx=r.idx + 1))


def _queue_work(b, kind: int, uid: int) -> None:
    """The Notify handler: acpi_hotplug_schedule queues the work (the worker starts it only
    once this event is handled)."""
    q = queue(b)
    set_queue(b, q._replace(items=(*q.items, (kind, uid))))


def _finish_event(b, r: Cscn):
    """Done with the event: start the hotplug worker if it has work and is not running."""
    q = queue(b)
    if q.items and q.worker is None:
        cpu = pick_worker(b, avoid=_target(b, q.items[0]))
        set_queue(b, q._replace(worker=cpu))
        if cpu != b.slot:
            return "wake", r._replace(wake=cpu)
    return "finish", r


def _target(b, item: tuple[int, int]) -> int | None:
    kind, uid = item
    return uid if kind == EJECT_REQUEST else None


@irq.step("wake")
def _wake(b, r: Cscn):
    b.ipi(b.cfg.apic_id(r.wake), DM_FIXED, WAKE_VECTOR)
    return "finish"


@irq.step("finish", joins=True)
def _finish(b, r):
    b.wr(ACPI_BUSY, 1, 0)
    return "iret", ()


# -- on a CPU being taken offline --------------------------------------------------------------
# One transition from the IPI to the halt: the request was written before the IPI was sent, and
# the only observer of the acknowledgement (the hotplug worker) waits for it.
@irq.step("offline", joins=True)
def _offline(b, r):
    if b.rd(offline_request(b.apic_id), 1) != 1:
        return "iret"
    return "offline_ack"


@irq.step("offline_ack", joins=True)
def _offline_ack(b, r):
    b.cli()
    b.wr(offline_ack(b.apic_id), 1, 1)
    b.note(f"OS: CPU with APIC ID {b.apic_id} offline (CLI; HLT)")
    return "dead"


@irq.step("dead", joins=True, waits="is offline in the OS (CLI; HLT), waiting to be ejected")
def _dead(b, r):
    b.cli()
    b.hlt()
    return "dead"
