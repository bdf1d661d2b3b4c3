"""The firmware's SMI handling in SMRAM: the rendezvous of all CPUs, MMI dispatch and SMI exit.

Modelled step for step on edk2's PiSmmCpuDxeSmm (MpService.c: SmiRendezvous, BSPHandler,
APHandler, SmmWaitForApArrival) in the configuration OVMF runs it with broadcast SMIs
(traditional sync mode, no MTRR rounds, no debug agent), and on OVMF's exit hook
(SmmCpuFeaturesLib SmmCpuFeaturesRendezvousExit); see /work/notes/edk2-firmware.md §2–§4.

* Every CPU enters at its tile (``fw.smi_entry``), whose stub knows the tile's processor
  number, and checks in on the arrival counter.  The BSP (IA32_APIC_BASE.BSP: APIC ID 0) is the
  monarch; a CPU that checks in after the monarch closed arrival takes no part and only waits
  for the final release.
* The monarch waits for every CPU in its table (first sync timeout), sends an SMI IPI to each
  known CPU that is not present, waits again (second timeout), then locks the arrival counter
  and proceeds with the CPUs that checked in.  Timeouts are not counted: a wait for a CPU ends
  when waiting longer cannot help (``Bus.timed_out``).
* It dispatches the MMI (APM_CNT): the CPU hotplug handler (``firmware.cpu_hotplug``) or the
  ready-to-lock SMI.
* Exit: InsideSmm is cleared and the APs released; they report back (in edk2-stable202211 in
  two rounds, "ready to reset" and "ready to exit"; in current edk2 in one), the monarch resets
  the rendezvous state and only then clears AllCpusInSync — the single store that lets every
  CPU run its exit hook and leave.  The hook ejects CPUs being removed (``cpu_hotplug``): the
  monarch writes the ejects, a CPU being removed parks itself with CLI; HLT, and (current edk2)
  the other APs wait until every eject is written.

Step labels carry ``waits=`` descriptions: what a CPU stopped at that step is doing.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as L
from smm_hotplug.firmware.options import FIX_DELAY_SMM_EXIT, RELOC_HOTPLUG_REG
from smm_hotplug.hw import cpuhp
from smm_hotplug.hw.cpu import DM_SMI
from smm_hotplug.hw.lpc import APM_CNT

CORE_PROGRAMS = frozenset({"fw.smm_core", "fw.smi_entry"})
HP = cpuhp.BASE

smi_entry = program("fw.smi_entry", "firmware", size=0x100, doc="per-CPU SMI entry stub in a TSEG tile")
core = program("fw.smm_core", "firmware", size=0x2000, doc="SMI rendezvous, MMI handlers and SMI exit")


def lay(b) -> L.SmramLayout:
    return L.smram_layout(b.cfg)


def table(b) -> list[int]:
    """CPU_HOT_PLUG_DATA.ApicId[] (merged with ProcessorInfo: the CPUs the rendezvous knows)."""
    sl = lay(b)
    return b.rd_many([sl.apic_id_slot(i) for i in range(sl.max_cpus)], 8)


class Scan(NamedTuple):
    """The monarch's registers during an SMI: its processor number, the APs it counted, and the
    CPU hotplug MMI's scratch (QemuCpuhpCollectApicIds' lists and the CPU in hand)."""

    cpu: int = 0  # the monarch's processor number
    ap_count: int = 0  # APs checked in when arrival was locked (BSPHandler's ApCount)
    missing: tuple[int, ...] = ()  # APIC IDs to send SMI IPIs to between the arrival phases
    sel: int = 0
    plugged: tuple[tuple[int, int], ...] = ()  # (APIC ID, selector)
    unplug: tuple[tuple[int, int], ...] = ()  # (APIC ID, selector)
    idx: int = 0
    apic: int = 0
    slot: int = 0
    added: tuple[int, ...] = ()  # processor numbers added in this SMI (SmmCpuAdd pending)
    ejects: int = 0  # UnplugCpus' EjectCount
    inserting: bool = False  # the selected CPU has an insert (else a fw-remove) event


class Ap(NamedTuple):
    """An AP's registers: its processor number and the monarch's."""

    cpu: int = 0
    bsp: int = 0


def _post(b, addr: int) -> None:
    """ReleaseSemaphore on a Run semaphore (never locked): +1."""
    b.wr(addr, 4, b.rd(addr, 4) + 1)


def _take(b, addr: int, count: int = 1) -> bool:
    """WaitForSemaphore ``count`` times on a Run semaphore; False while it holds fewer."""
    value = b.rd(addr, 4)
    if value < count:
        return False
    b.wr(addr, 4, value - count)
    return True


@smi_entry.step("entry", joins=True)
def _to_core(b, r):
    # Each tile's stub passes its processor number (the tile whose SMBASE this CPU has).
    sl = lay(b)
    cpu = sl.tile_of(b.smbase)
    b.jump(sl.smm_core, "entry", (0 if cpu is None else cpu,))
    return "entry"


@core.step("entry", joins=True)
def _rendezvous(b, r):
    """SmiRendezvous: sample InsideSmm, check in on the arrival counter, elect."""
    sl = lay(b)
    cpu = r[0]
    in_progress = b.rd(sl.inside_smm, 1)
    counter = b.rd(sl.counter, 4)
    if counter == L.COUNTER_LOCKED:
        # ReleaseSemaphore refuses a locked counter: arrival is closed for this SMI.
        b.note("checks in after the monarch closed arrival; waits for the SMI to end")
        return "ap_exit", Ap(cpu)
    b.wr(sl.counter, 4, counter + 1)
    if not in_progress and b.apic_id == L.BSP_APIC_ID:  # PlatformSmmBspElection: the BSP
        b.wr_many([(sl.bsp_index, 4, cpu), (sl.inside_smm, 1, 1), (sl.present(cpu), 1, 1)])
        return "m_arrive1", Scan(cpu=cpu)
    return "ap_wait_bsp", Ap(cpu)


# -- APs (APHandler) ---------------------------------------------------------------------------
def _monarch_gone(b) -> bool:
    return b.timed_out(L.BSP_APIC_ID, CORE_PROGRAMS)


@core.step(
    "ap_wait_bsp",
    joins=True,
    waits="spins in an AP's wait for the monarch to start the SMI (InsideSmm), up to the sync timeout",
)
def _ap_wait_bsp(b, r: Ap):
    sl = lay(b)
    if b.rd(sl.inside_smm, 1):
        bsp = b.rd(sl.bsp_index, 4)
        b.wr(sl.present(r.cpu), 1, 1)
        _post(b, sl.run(bsp))  # "arrived"
        return "ap_run", r._replace(bsp=bsp)
    if not _monarch_gone(b):
        return None
    # Sync timeout and no BSP: check out (WaitForSemaphore on the counter) and leave.
    counter = b.rd(sl.counter, 4)
    if counter == L.COUNTER_LOCKED and b.opt.current:
        pass  # SmmCpuSyncCheckOutCpu refuses a locked counter
    elif counter == 0:
        return None  # 202211's WaitForSemaphore spins while the counter is 0
    else:
        b.wr(sl.counter, 4, counter - 1)  # 202211 also decrements a locked counter
    b.note("AP: no monarch within the sync timeout; checks out and leaves SMM")
    return "ap_exit", r


@core.step("ap_run", waits="waits on its Run semaphore for the monarch to end the SMI")
def _ap_run(b, r: Ap):
    sl = lay(b)
    if not _take(b, sl.run(r.cpu)):
        return None
    if b.rd(sl.inside_smm, 1):
        return "ap_run"  # a procedure scheduled by the BSP would run here (none on OVMF)
    if b.opt.current:
        b.wr(sl.present(r.cpu), 1, 0)
        _post(b, sl.run(r.bsp))  # "ready to exit"
        return "ap_exit"
    _post(b, sl.run(r.bsp))  # "ready to reset"
    return "ap_reset"


@core.step("ap_reset", waits="waits on its Run semaphore for the monarch's 'reset your state' release")
def _ap_reset(b, r: Ap):
    sl = lay(b)
    if not _take(b, sl.run(r.cpu)):
        return None
    b.wr(sl.present(r.cpu), 1, 0)
    _post(b, sl.run(r.bsp))  # "ready to exit"
    return "ap_exit"


@core.step("ap_exit", waits="spins at the rendezvous exit until the monarch clears AllCpusInSync")
def _ap_exit(b, r: Ap):
    sl = lay(b)
    if b.rd(sl.all_cpus_in_sync, 1):
        return None
    # SmmCpuFeaturesRendezvousExit: with ejects pending, EjectCpu on this AP.
    if b.rd(sl.eject_handler, 8):
        if b.rd(sl.selector_map(r.cpu), 8) != L.NO_SELECTOR:
            b.cli()
            b.hlt()
            b.note("parks itself in SMM (CLI; HLT) to be ejected")
            return "ap_parked"
        if b.opt.has_fix(FIX_DELAY_SMM_EXIT):
            return "ap_eject_wait"  # 121af960e2: stay until every eject is written
        # Before it (edk2-stable202211): leave at once, while the monarch may still be ejecting.
    b.rsm()
    return "rsm"


@core.step(
    "ap_eject_wait",
    waits="spins in EjectCpu until the monarch has written every eject (Handler == NULL)",
)
def _ap_eject_wait(b, r: Ap):
    if b.rd(lay(b).eject_handler, 8):
        return None
    b.rsm()
    return "rsm"


@core.step("ap_parked", waits="is parked in SMM (CLI; HLT) until QEMU ejects it")
def _ap_parked(b, r):
    b.hlt()
    return "ap_parked"


# Places of an AP that has made its last write to the rendezvous state (its "ready to exit"):
# a CPU being removed may be ejected from any of them (EjectCpu on the BSP does not wait for
# the victim to halt; the victim never runs again).
PAST_LAST_RENDEZVOUS_WRITE = frozenset({"ap_exit", "ap_eject_wait", "ap_parked"})


@core.step("rsm")
def _rsm(b, r):
    b.rsm()
    return "rsm"


# -- monarch (BSPHandler) ----------------------------------------------------------------------
def _arrival(b) -> tuple[bool, int, int, list[int]]:
    """AllCpusInSmmWithExceptions: (all arrived, Counter, mNumberOfCpus, APIC IDs of the known
    CPUs not present)."""
    sl = lay(b)
    known = [(i, a) for i, a in enumerate(table(b)) if a != L.INVALID_APIC_ID]
    counter = b.rd(sl.counter, 4)
    present = b.rd_many([sl.present(i) for i, _ in known], 1)
    missing = [a for (_, a), p in zip(known, present, strict=True) if not p]
    return counter == len(known) or not missing, counter, len(known), missing


def _expired(b, missing: list[int]) -> bool:
    return all(b.timed_out(a, CORE_PROGRAMS) for a in missing)


@core.step("m_arrive1", waits="spins in the monarch's first wait for the APs to arrive (sync timeout 1)")
def _m_arrive1(b, r: Scan):
    done, counter, cpus, missing = _arrival(b)
    if done:
        return "m_lock"
    if not _expired(b, missing):
        return None
    if counter >= cpus:
        return "m_lock"
    b.note(f"monarch: APIC IDs {missing} not in SMM at the first sync timeout; SMI IPIs to bring them in")
    return "m_ipi", r._replace(missing=tuple(missing), idx=0)


@core.step("m_ipi")
def _m_ipi(b, r: Scan):
    b.ipi(r.missing[r.idx], DM_SMI)
    if r.idx + 1 < len(r.missing):
        return "m_ipi", r._replace(idx=r.idx + 1)
    return "m_arrive2", r._replace(missing=(), idx=0)


@core.step("m_arrive2", waits="spins in the monarch's second wait for the APs to arrive (sync timeout 2)")
def _m_arrive2(b, r: Scan):
    done, _, _, missing = _arrival(b)
    if done:
        return "m_lock"
    if not _expired(b, missing):
        return None
    b.note(f"monarch: proceeds without APIC IDs {missing} (second sync timeout)")
    return "m_lock"


@core.step("m_lock", joins=True)
def _m_lock(b, r: Scan):
    # AllCpusInSync = TRUE; ApCount = LockdownSemaphore(Counter) - 1.
    sl = lay(b)
    b.wr(sl.all_cpus_in_sync, 1, 1)
    checked_in = b.rd(sl.counter, 4)
    b.wr(sl.counter, 4, L.COUNTER_LOCKED)
    return "m_wait_aps", r._replace(ap_count=checked_in - 1)


@core.step(
    "m_wait_aps", joins=True, waits="spins in the monarch's wait for every AP it counted to report in (Run)"
)
def _m_wait_aps(b, r: Scan):
    return "m_cmd" if _take(b, lay(b).run(r.cpu), r.ap_count) else None


@core.step("m_cmd")
def _m_cmd(b, r: Scan):
    cmd = b.inp(APM_CNT, 1)
    if cmd == L.APM_CPU_HOTPLUG:
        b.note("monarch: CPU hotplug SMI")
        return "hp_begin"
    if cmd == L.APM_FW_READY_TO_LOCK:
        return "rtl"
    return "exit"


@core.step("rtl")
def _ready_to_lock(b, r: Scan):
    # Design hotplug-smbase-reg: fill each slot's SMBASE register (SMM-only) once, at boot.
    if b.opt.relocation == RELOC_HOTPLUG_REG:
        sl = lay(b)
        for slot in range(sl.max_cpus):
            b.out(HP + cpuhp.SELECTOR, 4, slot)
            b.out(HP + cpuhp.SMBASE_REG, 4, sl.tile_smbase(slot))
        b.note("monarch: hotplug controller SMBASE registers programmed")
    return "exit"


# -- SMI exit ------------------------------------------------------------------------------------
def _release_all(b, bsp: int) -> None:
    """ReleaseAllAPs: one Run release to every AP whose Present flag is set."""
    sl = lay(b)
    aps = [i for i in range(sl.max_cpus) if i != bsp]
    present = b.rd_many([sl.present(i) for i in aps], 1)
    runs = b.rd_many([sl.run(i) for i in aps], 4)
    b.wr_many([(sl.run(i), 4, v + 1) for i, p, v in zip(aps, present, runs, strict=True) if p])


# Joins the step before it: it only writes SMRAM, which no actor outside SMM can see, and the
# APs it releases are blocked until it runs.
@core.step("exit", joins=True)
def _exit(b, r: Scan):
    b.wr(lay(b).inside_smm, 1, 0)
    _release_all(b, r.cpu)
    return ("x_update" if b.opt.current else "x_wait_reset"), r


@core.step("x_wait_reset", waits="spins in the monarch's wait for every AP to report 'ready to reset'")
def _x_wait_reset(b, r: Scan):
    if not _take(b, lay(b).run(r.cpu), r.ap_count):
        return None
    _release_all(b, r.cpu)  # "reset your state"
    return "x_update"


@core.step("x_update", joins=True)
def _x_update(b, r: Scan):
    # SmmCpuUpdate has nothing left to do (the table was updated in place); Present[BSP] = FALSE.
    b.wr(lay(b).present(r.cpu), 1, 0)
    return "x_wait_exit"


@core.step(
    "x_wait_exit", joins=True, waits="spins in the monarch's wait for every AP to report 'ready to exit'"
)
def _x_wait_exit(b, r: Scan):
    sl = lay(b)
    if not _take(b, sl.run(r.cpu), r.ap_count):
        return None
    # Reset the rendezvous, then AllCpusInSync = FALSE: the release every CPU's exit waits for.
    b.wr_many([(sl.bsp_index, 4, L.NO_BSP), (sl.counter, 4, 0), (sl.all_cpus_in_sync, 1, 0)])
    return "x_hook"


@core.step("x_hook")
def _x_hook(b, r: Scan):
    # SmmCpuFeaturesRendezvousExit on the BSP: EjectCpu if ejects are pending.
    if b.rd(lay(b).eject_handler, 8):
        return "ej_next", r._replace(idx=0)
    b.rsm()
    return "rsm"


@core.step("fatal")
def _fatal(b, r):
    # CpuDeadLoop(): the SMI is never finished.
    b.note("monarch: fatal error, dead loop in SMM")
    b.cli()
    b.hlt()
    return "dead"


@core.step("dead", waits="is stopped in the monarch's dead loop (CpuDeadLoop) after a fatal error")
def _dead(b, r):
    b.hlt()
    return "dead"
