"""The OS's hotplug worker: what Linux 6.1 does with a CPU's Device Check and Eject Request.

One worker at a time runs the queued items in order (Linux: the ordered ``kacpi_hotplug``
workqueue, drivers/acpi/osl.c; acpi_hotplug_work_fn first waits until CPU 0 is done with the
ACPI event, acpi_os_wait_events_complete), on a CPU the scheduler picks (guest/osmem.py,
``pick_worker``); it evaluates QEMU 7.2's AML methods of the CPU object, each under the mutex
CPLK (hw/acpi/cpu.c, build_cpus_aml: CSTA, COST, CEJ0), so the AML of the GPE handler on CPU 0
(CSCN, guest/acpi.py) and the worker's on another CPU interleave only between methods.

* Device Check (drivers/acpi/scan.c, acpi_device_hotplug -> acpi_scan_device_check): _STA three
  times — acpi_bus_get_status, acpi_bus_attach, acpi_processor_hotadd_init
  (drivers/acpi/acpi_processor.c), which registers the CPU — then _OST(1, 0).  The kernel does
  not start the CPU: user space onlines it later (a udev rule writes ``online``), and
  ``do_boot_cpu`` (arch/x86/kernel/smpboot.c) sends INIT, SIPI, SIPI into the trampoline.  The
  model lets that follow the _OST on the worker's CPU (onlining takes the device hotplug lock,
  so it is serialised with the hotplug work anyway).
* Eject Request (acpi_generic_hotplug_event -> acpi_scan_hot_remove): _OST(3, 0x80, in
  progress), take the CPU offline (it parks: hlt_play_dead), unregister it (acpi_bus_trim),
  _EJ0 — with firmware-handled unplug negotiated: CEJF, then 4 to APM_CNT — then _STA to verify
  (a CPU still present is only a warning) and _OST(3, 0).

An AML method holds CPLK from its first register access to its last; the worker keeps
interrupts off meanwhile, so an SCI on the same CPU (CPU 0 when it is the only one) runs its
CSCN between methods and never waits for a mutex its own CPU holds.
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
    OS_TRAMPOLINE,
    WAKE_VECTOR,
    acquire_cplk,
    offline_ack,
    offline_request,
    online_flag,
    pick_worker,
    queue,
    release_cplk,
    set_queue,
)
from smm_hotplug.hw import cpuhp, lpc
from smm_hotplug.hw.cpu import DM_FIXED, DM_INIT, DM_SIPI

HP = cpuhp.BASE
FLAG_FW_EJECT = 2  # OS_GLOBALS + 4, bit 1: the firmware negotiated hot-unplug (it ejects)

# _STA (ACPI 6.x §6.3.7): QEMU's CSTA answers 0xF for an enabled CPU, else 0.
STA_PRESENT = 0xF
# _OST status codes (ACPI 6.x §6.3.5, table 6-197; Linux include/acpi/acpixf.h ACPI_OST_SC_*).
OST_SUCCESS = 0x00
OST_FAILURE = 0x01  # non-specific failure
OST_EJECT_IN_PROGRESS = 0x80

# What a worker waiting at a step waits for (checker.liveness names stuck actors by these).
ACPI_EVENT_WAIT = "waits for the OS to finish handling an ACPI event before its hotplug work"
CPLK_WAIT = "waits for the ACPI CPU hotplug mutex (CPLK) to run a method of the CPU"

worker = program("os.hotplug", "os", size=0x1000, doc="OS hotplug worker (kacpi_hotplug) and CPU AML")


class Work(NamedTuple):
    home: int = 0  # the idle code of this CPU, where the worker returns when the queue is empty
    kind: int = 0  # DEVICE_CHECK | EJECT_REQUEST
    uid: int = 0  # the CPU object's _UID: its hotplug selector
    n: int = 0  # _STA evaluations so far (device check)
    sta: int = 0  # the last _STA result
    ev: int = 0  # _OST arguments
    st: int = 0
    ret: str = ""  # where the AML method being evaluated returns to
    wake: int = 0  # the CPU the worker is handed over to


# Taking the next item touches only the OS's queue: it joins the step before it (the idle loop,
# or the end of the previous item), and the AML method it starts is the next interleaving point.
@worker.step("next", joins=True, waits=ACPI_EVENT_WAIT)
def _next(b, r: Work):
    q = queue(b)
    if not q.items:
        set_queue(b, q._replace(worker=None))
        b.jump(r.home, "idle")
        return "next"
    if b.rd(ACPI_BUSY, 1):
        return None  # acpi_os_wait_events_complete: CPU 0 is still handling an ACPI event
    kind, uid = q.items[0]
    if kind == EJECT_REQUEST and uid == b.slot:
        # This CPU is about to be taken offline: the scheduler moves the worker elsewhere.
        cpu = pick_worker(b, avoid=uid)
        set_queue(b, q._replace(worker=cpu))
        return "handover", r._replace(wake=cpu)
    set_queue(b, q._replace(items=q.items[1:]))
    what = "device check" if kind == DEVICE_CHECK else "eject request"
    b.note(f"OS: hotplug work on cpu{b.slot}: {what} of CPU {uid}")
    r = Work(home=r.home, kind=kind, uid=uid)
    return ("dc_sta" if kind == DEVICE_CHECK else "ej_begin"), r


@worker.step("handover", waits=CPLK_WAIT)
def _handover(b, r: Work):
    b.ipi(b.cfg.apic_id(r.wake), DM_FIXED, WAKE_VECTOR)
    b.jump(r.home, "idle")
    return "handover"


# -- the CPU object's AML methods (QEMU 7.2), each a subroutine returning to ``ret`` ---------------
def _enter(b, r: Work, first: str, ret: str, **regs):
    """Acquire CPLK (wait while another CPU holds it), interrupts off, CSEL = uid."""
    if not acquire_cplk(b):
        return None
    b.cli()
    b.out(HP + cpuhp.SELECTOR, 4, r.uid)
    return first, r._replace(ret=ret, **regs)


def _leave(b, r: Work):
    release_cplk(b)
    b.sti()
    return r.ret, r


def call_sta(b, r: Work, ret: str):
    """_STA -> CSTA: CSEL = uid, read the flags (CPEN)."""
    return _enter(b, r, "sta_read", ret)


@worker.step("sta_read", waits=CPLK_WAIT)
def _sta_read(b, r: Work):
    present = b.inp(HP + cpuhp.FLAGS, 1) & cpuhp.F_ENABLED
    return _leave(b, r._replace(sta=STA_PRESENT if present else 0))


def call_ost(b, r: Work, event: int, status: int, ret: str):
    """_OST(event, status) -> COST: CSEL = uid, CCMD = 1, CDAT = event, CCMD = 2, CDAT = status
    (QEMU emits ACPI_DEVICE_OST on the status write)."""
    return _enter(b, r, "ost_cmd_event", ret, ev=event, st=status)


@worker.step("ost_cmd_event")
def _ost_cmd_event(b, r: Work):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_OST_EVENT)
    return "ost_event"


@worker.step("ost_event")
def _ost_event(b, r: Work):
    b.out(HP + cpuhp.DATA, 4, r.ev)
    return "ost_cmd_status"


@worker.step("ost_cmd_status")
def _ost_cmd_status(b, r: Work):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_OST_STATUS)
    return "ost_status"


@worker.step("ost_status", waits=CPLK_WAIT)
def _ost_status(b, r: Work):
    b.out(HP + cpuhp.DATA, 4, r.st)
    return _leave(b, r)


def call_ej0(b, r: Work, ret: str):
    """_EJ0 -> CEJ0: CSEL = uid; with firmware-handled unplug CEJF = 1 and 4 to APM_CNT (the
    firmware ejects the CPU in that SMI), else CEJ0 = 1 (QEMU ejects at once)."""
    return _enter(b, r, "ej0_write", ret)


@worker.step("ej0_write")
def _ej0_write(b, r: Work):
    if b.rd(OS_GLOBALS + 4, 1) & FLAG_FW_EJECT:
        b.note(f"OS: _EJ0 CPU {r.uid}: firmware-driven eject (fw_remove + SMI)")
        b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
        return "ej0_smi"
    b.note(f"OS: _EJ0 CPU {r.uid}: direct eject")
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    return _leave(b, r)


@worker.step("ej0_smi")
def _ej0_smi(b, r: Work):
    b.out(lpc.APM_CNT, 1, FW.APM_CPU_HOTPLUG)
    return _leave(b, r)


# -- Device Check: a new CPU ---------------------------------------------------------------------
@worker.step("dc_sta", waits=CPLK_WAIT)
def _dc_sta(b, r: Work):
    if r.n and r.sta != STA_PRESENT:
        # Absent at the first _STA: nothing to add (success); later: enumeration failed.
        status = OST_SUCCESS if r.n == 1 else OST_FAILURE
        b.note(f"OS: CPU {r.uid} not present (_STA #{r.n}); _OST(1, {status})")
        return call_ost(b, r, DEVICE_CHECK, status, "next")
    if r.n == 3:
        b.note(f"OS: CPU {r.uid} hot-added (_STA x3); _OST(1, 0)")
        return call_ost(b, r, DEVICE_CHECK, OST_SUCCESS, "online")
    return call_sta(b, r._replace(n=r.n + 1), "dc_sta")


# User space onlines the CPU: INIT, SIPI, SIPI into the trampoline (do_boot_cpu).
@worker.step("online")
def _online(b, r: Work):
    apic = b.cfg.apic_id(r.uid)  # from the CPU object's _MAT
    b.note(f"OS: onlining CPU {r.uid} (APIC ID {apic}) with INIT-SIPI-SIPI")
    b.ipi(apic, DM_INIT)
    return "online_sipi1"


@worker.step("online_sipi1", waits="waits out the INIT-to-SIPI delay while onlining a new CPU")
def _online_sipi1(b, r: Work):
    apic = b.cfg.apic_id(r.uid)
    if not b.init_delay_elapsed(apic):
        return None
    b.ipi(apic, DM_SIPI, OS_TRAMPOLINE >> 12)
    return "online_sipi2"


@worker.step("online_sipi2")
def _online_sipi2(b, r: Work):
    b.ipi(b.cfg.apic_id(r.uid), DM_SIPI, OS_TRAMPOLINE >> 12)
    return "online_wait"


@worker.step("online_wait", waits="waits in the OS for a new CPU to come online")
def _online_wait(b, r: Work):
    if b.rd(online_flag(b.cfg.apic_id(r.uid)), 1) != 1:
        return None
    return "next"


# -- Eject Request: a CPU to remove ------------------------------------------------------------------
@worker.step("ej_begin", waits=CPLK_WAIT)
def _ej_begin(b, r: Work):
    return call_ost(b, r, EJECT_REQUEST, OST_EJECT_IN_PROGRESS, "ej_offline")


@worker.step("ej_offline")
def _ej_offline(b, r: Work):
    apic = b.cfg.apic_id(r.uid)
    b.note(f"OS: offlining CPU {r.uid} (APIC ID {apic})")
    b.wr(offline_request(apic), 1, 1)
    b.ipi(apic, DM_FIXED, OFFLINE_VECTOR)
    return "ej_trim"


@worker.step("ej_trim", waits="waits in the OS for the CPU being removed to go offline (or for CPLK)")
def _ej_trim(b, r: Work):
    apic = b.cfg.apic_id(r.uid)
    if b.rd(offline_ack(apic), 1) != 1:
        return None
    out = call_ej0(b, r, "ej_sta")
    if out is not None:  # acpi_bus_trim: the CPU is unregistered before _EJ0
        b.wr_many([(online_flag(apic), 1, 0), (offline_request(apic), 1, 0), (offline_ack(apic), 1, 0)])
    return out


@worker.step("ej_sta", waits=CPLK_WAIT)
def _ej_sta(b, r: Work):
    return call_sta(b, r, "ej_done")


@worker.step("ej_done", waits=CPLK_WAIT)
def _ej_done(b, r: Work):
    if r.sta == STA_PRESENT:
        b.note(f"OS: CPU {r.uid}: eject incomplete (_STA 0x{r.sta:x})")
    return call_ost(b, r, EJECT_REQUEST, OST_SUCCESS, "next")
