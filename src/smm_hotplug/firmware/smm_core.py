"""The firmware's SMI handler: rendezvous, CPU hotplug MMI, hot-unplug and SMI exit.

Modelled on PiSmmCpuDxeSmm + OvmfPkg/CpuHotplugSmm (see ../shared/reference/firmware-facts.md):

* Every CPU enters at its tile (``fw.smi_entry``) and jumps to the core.  The BSP is the
  monarch; APs check in and wait for the monarch to let them go.
* The monarch waits for every CPU in its table (with a timeout), reads APM_CNT and, for the
  CPU hotplug command (4), scans the hotplug block like QemuCpuhpCollectApicIds, relocates
  each new CPU in turn like SmbaseRelocate (directed SMI, INIT-SIPI-SIPI into the pen, gate),
  and drops CPUs marked fw-remove from its table.
* At exit, a CPU being removed halts itself inside SMM with interrupts off; the monarch ejects
  it through the hotplug block and only then lets the other CPUs leave.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as L
from smm_hotplug.firmware.options import RELOC_FIRST_SMI, RELOC_HOTPLUG_REG, RELOC_MSR, RELOC_NONE
from smm_hotplug.hw import cpuhp
from smm_hotplug.hw.cpu import DM_INIT, DM_SIPI, DM_SMI
from smm_hotplug.hw.lpc import APM_CNT

CORE_PROGRAMS = frozenset({"fw.smm_core", "fw.smi_entry"})
HP = cpuhp.BASE

smi_entry = program("fw.smi_entry", "firmware", size=0x100, doc="per-CPU SMI entry stub in a TSEG tile")


@smi_entry.step("entry", joins=True)
def _to_core(b, r):
    b.jump(L.smram_layout(b.cfg).smm_core, "entry")
    return "entry"


core = program("fw.smm_core", "firmware", size=0x2000, doc="SMI rendezvous and MMI handlers")


def _lay(b):
    return L.smram_layout(b.cfg)


def _pen(b) -> int:
    """mPostSmmPenAddress: the pen page the firmware allocated at boot (firmware/layout.py)."""
    return b.rd(_lay(b).post_smm_pen, 4)


def _table(b) -> list[int]:
    lay = _lay(b)
    return b.rd_many([lay.apic_id_slot(i) for i in range(lay.max_cpus)], 8)


@core.step("entry", joins=True)
def _entry(b, r):
    return "m_wait" if b.apic_id == L.BSP_APIC_ID else "ap_arrive"


# -- APs --------------------------------------------------------------------------------------
# An AP checks in, waits for the monarch's exit signal, then either parks (it is being
# removed) or waits for the final release and leaves.  Its check-in joins the SMI entry: the
# only observer of the flag is the monarch's arrival wait, which just waits until it is set.
@core.step("ap_arrive", joins=True)
def _ap_arrive(b, r):
    b.wr(_lay(b).arrived(b.apic_id), 1, 1)
    return "ap_wait"


def _monarch_gone(b) -> bool:
    return b.timed_out(L.BSP_APIC_ID, CORE_PROGRAMS)


@core.step("ap_wait")
def _ap_wait(b, r):
    lay = _lay(b)
    # The victim mark is written before the exit signal and stays put: one snapshot read.
    phase, victim = b.rd_many([lay.exit_phase, lay.victim(b.apic_id)], 4)
    if phase >= 1:
        return "ap_park" if victim else "ap_wait2"
    if _monarch_gone(b):
        return "ap_leave"
    return None


@core.step("ap_park")
def _ap_park(b, r):
    # EjectCpu() on an AP under ejection: signal, then CLI/HLT inside SMM until ejected.
    b.cli()
    b.wr(_lay(b).parked(b.apic_id), 1, 1)
    b.hlt()
    b.note("parks itself halted in SMM, waiting to be ejected")
    return "ap_parked"


@core.step("ap_parked")
def _ap_parked(b, r):
    b.hlt()
    return "ap_parked"


@core.step("ap_wait2")
def _ap_wait2(b, r):
    if b.rd(_lay(b).exit_phase, 4) == 2 or _monarch_gone(b):
        return "ap_leave"
    return None


@core.step("ap_leave", joins=True)
def _ap_leave(b, r):
    # Check out and RSM.  What lies between the two on real hardware is private to this CPU.
    b.wr(_lay(b).arrived(b.apic_id), 1, 0)
    b.rsm()
    return "rsm"


@core.step("rsm")
def _rsm(b, r):
    b.rsm()
    return "rsm"


# -- monarch ------------------------------------------------------------------------------------
@core.step("m_wait")
def _m_wait(b, r):
    lay = _lay(b)
    others = [a for a in _table(b) if a not in (L.INVALID_APIC_ID, b.apic_id)]
    flags = b.rd_many([lay.arrived(a) for a in others], 1)
    if all(f == 1 or b.timed_out(a, CORE_PROGRAMS) for a, f in zip(others, flags, strict=True)):
        return "m_cmd"
    return None


@core.step("m_cmd")
def _m_cmd(b, r):
    cmd = b.inp(APM_CNT, 1)
    if cmd == L.APM_CPU_HOTPLUG:
        b.note("monarch: CPU hotplug SMI")
        return "hp_begin"
    if cmd == L.APM_FW_READY_TO_LOCK:
        return "rtl"
    return "exit"


@core.step("rtl")
def _ready_to_lock(b, r):
    # Design hotplug-smbase-reg: fill each slot's SMBASE register (SMM-only) once, at boot.
    if b.opt.relocation == RELOC_HOTPLUG_REG:
        lay = _lay(b)
        for slot in range(lay.max_cpus):
            b.out(HP + cpuhp.SELECTOR, 4, slot)
            b.out(HP + cpuhp.SMBASE_REG, 4, lay.tile_smbase(slot))
        b.note("monarch: hotplug controller SMBASE registers programmed")
    return "exit"


class Scan(NamedTuple):
    """The monarch's registers while it handles a CPU hotplug MMI."""

    sel: int = 0
    plugged: tuple[tuple[int, int], ...] = ()  # (APIC ID, selector)
    unplug: tuple[tuple[int, int], ...] = ()  # (APIC ID, selector)
    idx: int = 0
    apic: int = 0
    slot: int = 0
    victims: tuple[tuple[int, int], ...] = ()  # (APIC ID, selector) to eject at exit
    inserting: bool = False  # the selected CPU has an insert (else a fw-remove) event


@core.step("hp_begin")
def _hp_begin(b, r):
    if b.opt.relocation == RELOC_FIRST_SMI:
        b.install(_pen(b), "fw.pen")  # SmbaseReinstallPostSmmPen
    return "hp_sel", Scan()


@core.step("hp_sel")
def _hp_sel(b, r: Scan):
    b.out(HP + cpuhp.SELECTOR, 4, r.sel)
    return "hp_cmd"


@core.step("hp_cmd")
def _hp_cmd(b, r: Scan):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_NEXT_WITH_EVENT)
    return "hp_pending"


@core.step("hp_pending")
def _hp_pending(b, r: Scan):
    pending = b.inp(HP + cpuhp.DATA, 4)
    if pending < r.sel:
        return "add_next", r._replace(idx=0)  # wrapped around
    return "hp_status", r._replace(sel=pending)


@core.step("hp_status")
def _hp_status(b, r: Scan):
    st = b.inp(HP + cpuhp.FLAGS, 1)
    if st & cpuhp.F_INSERT:
        if not st & cpuhp.F_ENABLED or st & cpuhp.F_FW_REMOVE:
            b.note(f"monarch: selector {r.sel}: inconsistent CPU status 0x{st:x}")
            return "fatal"
        return "hp_archid_cmd", r._replace(inserting=True)
    if st & cpuhp.F_FW_REMOVE:
        if not st & cpuhp.F_ENABLED:
            b.note(f"monarch: selector {r.sel}: inconsistent CPU status 0x{st:x}")
            return "fatal"
        return "hp_archid_cmd", r._replace(inserting=False)
    if st & cpuhp.F_REMOVE:
        return _next_selector(b, r)  # a plain remove request is the OS's business
    return "add_next", r._replace(idx=0)  # no event: collection done


def _next_selector(b, r: Scan):
    sel = r.sel + 1
    if sel >= _lay(b).max_cpus:
        return "add_next", r._replace(idx=0)
    return "hp_sel", r._replace(sel=sel)


@core.step("hp_archid_cmd")
def _hp_archid_cmd(b, r: Scan):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_ARCH_ID)
    return "hp_archid"


@core.step("hp_archid")
def _hp_archid(b, r: Scan):
    apic = b.inp(HP + cpuhp.DATA, 4)
    if r.inserting:
        r = r._replace(plugged=(*r.plugged, (apic, r.sel)))
    else:
        r = r._replace(unplug=(*r.unplug, (apic, r.sel)))
    return _next_selector(b, r)


# Hot-added CPUs, one at a time.
@core.step("add_next", joins=True)
def _add_next(b, r: Scan):
    if r.idx >= len(r.plugged):
        return "rm_next", r._replace(idx=0)
    apic, sel = r.plugged[r.idx]
    table = _table(b)
    if apic in table:
        b.note(f"monarch: APIC ID {apic} is already known; skipped")
        return "add_next", r._replace(idx=r.idx + 1)
    if b.opt.slot_by_selector:
        slot = sel if table[sel] == L.INVALID_APIC_ID else None
    else:
        slot = next((i for i, a in enumerate(table) if a == L.INVALID_APIC_ID), None)
    if slot is None:
        b.note(f"monarch: no room for APIC ID {apic}")
        return "fatal"
    r = r._replace(apic=apic, slot=slot)
    mode = b.opt.relocation
    if mode == RELOC_FIRST_SMI:
        return "rel_clear", r
    if mode == RELOC_MSR:
        return "msr_mailbox", r
    if mode == RELOC_HOTPLUG_REG:
        return "record", r
    assert mode == RELOC_NONE
    return "add_next", r._replace(idx=r.idx + 1)


@core.step("rel_clear")
def _rel_clear(b, r: Scan):
    b.wr(L.CTX_ABOUT_TO_LEAVE, 1, 0)
    return "rel_pen"


@core.step("rel_pen")
def _rel_pen(b, r: Scan):
    b.wr(_pen(b) + L.PEN_VACATED, 1, 0)
    return "rel_smi"


@core.step("rel_smi")
def _rel_smi(b, r: Scan):
    b.note(f"monarch: relocating APIC ID {r.apic} into slot {r.slot}")
    b.ipi(r.apic, DM_SMI)
    return "rel_init"


@core.step("rel_init")
def _rel_init(b, r: Scan):
    b.ipi(r.apic, DM_INIT)
    return "rel_sipi1"


@core.step("rel_sipi1")
def _rel_sipi1(b, r: Scan):
    if not b.init_delay_elapsed(r.apic):  # SendInitSipiSipi's MicroSecondDelay
        return None
    b.ipi(r.apic, DM_SIPI, _pen(b) >> 12)
    return "rel_sipi2"


@core.step("rel_sipi2")
def _rel_sipi2(b, r: Scan):
    b.ipi(r.apic, DM_SIPI, _pen(b) >> 12)
    return "rel_newsmbase"


@core.step("rel_newsmbase")
def _rel_newsmbase(b, r: Scan):
    b.wr(L.CTX_NEW_SMBASE, 4, _lay(b).tile_smbase(r.slot))
    return "rel_gate" if b.opt.gate else "rel_wait_leave"


@core.step("rel_gate")
def _rel_gate(b, r: Scan):
    if not b.cmpxchg(L.CTX_GATE, 8, L.INVALID_APIC_ID, r.apic):
        b.note("monarch: APIC ID gate was not closed (EFI_PROTOCOL_ERROR)")
        return "fatal"
    return "rel_wait_leave"


@core.step("rel_wait_leave")
def _rel_wait_leave(b, r: Scan):
    return "rel_wait_pen" if b.rd(L.CTX_ABOUT_TO_LEAVE, 1) == 1 else None


@core.step("rel_wait_pen")
def _rel_wait_pen(b, r: Scan):
    return "record" if b.rd(_pen(b) + L.PEN_VACATED, 1) == 1 else None


@core.step("msr_mailbox")
def _msr_mailbox(b, r: Scan):
    b.wr_many([(L.MSR_MAILBOX, 4, _lay(b).tile_smbase(r.slot)), (L.MSR_DONE, 1, 0)])
    b.install(L.FIRST_SMI_HANDLER, "fw.first_smi_rsm")
    return "msr_init"


@core.step("msr_init")
def _msr_init(b, r: Scan):
    b.ipi(r.apic, DM_INIT)
    return "msr_sipi"


@core.step("msr_sipi")
def _msr_sipi(b, r: Scan):
    if not b.init_delay_elapsed(r.apic):
        return None
    b.ipi(r.apic, DM_SIPI, L.MSR_TRAMPOLINE >> 12)
    return "msr_wait"


@core.step("msr_wait")
def _msr_wait(b, r: Scan):
    return "record" if b.rd(L.MSR_DONE, 1) == 1 else None


@core.step("record", joins=True)
def _record(b, r: Scan):
    b.wr(_lay(b).apic_id_slot(r.slot), 8, r.apic)
    b.note(f"monarch: APIC ID {r.apic} recorded in slot {r.slot}, SMBASE 0x{_lay(b).tile_smbase(r.slot):x}")
    return "add_next", r._replace(idx=r.idx + 1)


# CPUs to remove: drop them from the table; they are ejected at SMI exit.
@core.step("rm_next", joins=True)
def _rm_next(b, r: Scan):
    if r.idx >= len(r.unplug):
        return "exit", r
    apic, _sel = r.unplug[r.idx]
    table = _table(b)
    if apic not in table:
        b.note(f"monarch: APIC ID {apic} to unplug is unknown; ignored")
        return "rm_next", r._replace(idx=r.idx + 1)
    slot = table.index(apic)
    b.wr(_lay(b).apic_id_slot(slot), 8, L.INVALID_APIC_ID)
    b.note(f"monarch: APIC ID {apic} dropped from slot {slot}, to be ejected")
    return "rm_mark", r._replace(slot=slot, apic=apic)


@core.step("rm_mark", joins=True)
def _rm_mark(b, r: Scan):
    _, sel = r.unplug[r.idx]
    b.wr(_lay(b).victim(r.apic), 4, sel + 1)
    return "rm_next", r._replace(idx=r.idx + 1, victims=(*r.victims, (r.apic, sel)))


# -- SMI exit ------------------------------------------------------------------------------------
@core.step("exit")
def _exit(b, r):
    b.wr(_lay(b).exit_phase, 4, 1)
    victims = r.victims if isinstance(r, Scan) else ()
    return "x_wait_park", Scan(victims=victims)


@core.step("x_wait_park")
def _x_wait_park(b, r: Scan):
    lay = _lay(b)
    if not r.victims:
        return "x_release", r
    parked = b.rd_many([lay.parked(a) for a, _ in r.victims], 1)
    if all(p == 1 or b.timed_out(a, CORE_PROGRAMS) for (a, _), p in zip(r.victims, parked, strict=True)):
        return "x_select", r._replace(idx=0)
    return None


@core.step("x_select")
def _x_select(b, r: Scan):
    if r.idx >= len(r.victims):
        return "x_release", r
    b.out(HP + cpuhp.SELECTOR, 4, r.victims[r.idx][1])
    return "x_eject"


@core.step("x_eject")
def _x_eject(b, r: Scan):
    apic, sel = r.victims[r.idx]
    b.note(f"monarch: ejects APIC ID {apic} (selector {sel})")
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    return "x_forget", r


@core.step("x_forget", joins=True)
def _x_forget(b, r: Scan):
    lay = _lay(b)
    apic, _ = r.victims[r.idx]
    b.wr_many([(lay.victim(apic), 4, 0), (lay.parked(apic), 1, 0), (lay.arrived(apic), 1, 0)])
    return "x_select", r._replace(idx=r.idx + 1)


@core.step("x_release")
def _x_release(b, r: Scan):
    b.wr(_lay(b).exit_phase, 4, 2)
    return "x_wait_left", r


@core.step("x_wait_left")
def _x_wait_left(b, r: Scan):
    lay = _lay(b)
    apics = sorted({b.cfg.apic_id(s) for s in range(lay.max_cpus)} - {b.apic_id})
    if any(b.rd_many([lay.arrived(a) for a in apics], 1)):
        return None
    return "x_done", ()


@core.step("x_done")
def _x_done(b, r):
    b.wr(_lay(b).exit_phase, 4, 0)
    return "rsm", ()


@core.step("fatal")
def _fatal(b, r):
    # CpuDeadLoop(): the SMI is never finished.
    b.note("monarch: fatal error, dead loop in SMM")
    b.cli()
    b.hlt()
    return "dead"


@core.step("dead")
def _dead(b, r):
    b.hlt()
    return "dead"
