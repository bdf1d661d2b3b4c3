"""The CPU core: SMM entry and the save-state map, RSM, NMI and interrupt entry, executing programs.

``cpu_step`` is one architectural step of a CPU: it takes what the interrupt controller
(hw.apic) says is pending — INIT (``take_init``), SIPI (``take_sipi``), an SMI (``smi_enter``),
an NMI (``nmi_enter``), an external interrupt (through the IDT the OS installed) — or else
executes one step of its program (hw.bus.step_program), plus the steps that join it, and
performs an RSM the program executed (``rsm``).  Save-state offsets are QEMU's 64-bit map
(hw.cpu; SDM vol. 3C 32.4-32.5).  What the accelerator decides (which event, whether an SMI
survives an INIT, whether a SIPI starts the CPU, when RSM reloads SMBASE) is asked of hw.apic.
"""

from __future__ import annotations

from smm_hotplug.code import PROGRAMS
from smm_hotplug.hw import apic, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.bus import step_program
from smm_hotplug.hw.cpu import (
    ABSENT,
    EFLAGS_IF,
    HALTED,
    NMI_VECTOR,
    NO_SIPI,
    REVISION_SMBASE_RELOCATION,
    RUNNING,
    SMI_HANDLER_OFFSET,
    SMM_REVISION_ID,
    SS_GPRS,
    SS_REVISION_ID,
    SS_RFLAGS,
    SS_RIP,
    SS_SMBASE,
    WAIT_SIPI,
    Cpu,
    after_init,
    after_sipi,
)
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log

SMM = views.SMM
MAX_JOINED_STEPS = 64


def cpu_enabled(board: Board, m: Machine, slot: int) -> bool:
    """Cheap pre-check: can this CPU possibly make a step?"""
    c = m.cpus[slot]
    if c.mode == ABSENT:
        return False
    if apic.pending(board, m, slot) is not None:
        return True
    return c.mode == RUNNING and c.pc is not None


def cpu_step(board: Board, m: Machine, slot: int, log: Log) -> Machine | None:
    """One architectural step of CPU ``slot``; None when it cannot move."""
    c = m.cpus[slot]
    if c.mode == ABSENT:
        return None
    event = apic.pending(board, m, slot)
    if event is None:
        if c.mode != RUNNING or c.pc is None:
            return None
        return execute(board, m, slot, log)
    for _ in range(3):  # at most INIT, SIPI and one injection share a step (apic.take_together)
        m = take(board, m, slot, event, log)
        nxt = apic.pending(board, m, slot)
        if not apic.take_together(board, event, nxt):
            break
        assert nxt is not None
        event = nxt
    return m


def take(board: Board, m: Machine, slot: int, event: str, log: Log) -> Machine:
    """Take one event the interrupt controller says is pending."""
    if event == apic.TAKE_INIT:
        return take_init(board, m, slot, log)
    if event == apic.TAKE_SIPI:
        return take_sipi(board, m, slot, log)
    if event == apic.TAKE_SMI:
        return smi_enter(board, m, slot, log)
    if event == apic.TAKE_NMI:
        return nmi_enter(board, m, slot, log)
    c, vector = apic.acknowledge(m.cpus[slot])
    log.add("cpu", f"cpu{slot}", f"interrupt vector 0x{vector:02x}")
    frame = (c.pc, c.regs, c.intr, c.frame)
    c = c._replace(mode=RUNNING, pc=(c.idt, "entry"), regs=(vector,), intr=False, frame=frame)
    return set_cpu(m, slot, c)


def take_init(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """INIT: reset except SMBASE (hw.cpu.after_init); the BSP restarts at the reset vector."""
    c = m.cpus[slot]
    bsp = slot == 0
    new = after_init(c, bsp, board.reset_pc, apic.init_keeps_smi(board, c))
    if log.record:
        what = "restarts at the reset vector" if bsp else "waits for SIPI"
        kept = "; keeps its SMI" if new.smi else ("; its SMI is dropped" if c.smi else "")
        log.add("cpu", f"cpu{slot}", f"INIT{' in SMM: leaves SMM,' if c.smm else ':'} {what}{kept}")
    return set_cpu(m, slot, new)


def take_sipi(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """SIPI: starts a CPU waiting for one at vector*0x1000; otherwise it is dropped, waking a
    halted CPU, which continues after its HLT (apic.sipi_starts)."""
    c = m.cpus[slot]
    if apic.sipi_starts(c):
        log.add("cpu", f"cpu{slot}", f"SIPI: starts at 0x{c.sipi << 12:05x}")
        return set_cpu(m, slot, after_sipi(c, c.sipi))
    woken = c.mode == HALTED
    log.add("cpu", f"cpu{slot}", "SIPI dropped" + ("; it wakes from HLT" if woken else ""))
    return set_cpu(m, slot, c._replace(sipi=NO_SIPI, mode=RUNNING if woken else c.mode))


def _interrupted(board: Board, c: Cpu) -> Cpu:
    """The context an SMI or NMI interrupts.  A CPU waiting for SIPI (TCG takes both there)
    interrupts its reset state — CS:IP F000:FFF0, IF=0, no IDT — and its APIC still waits for
    SIPI afterwards (x86_cpu_exec_interrupt; apic_sipi checks wait_for_sipi)."""
    if c.mode != WAIT_SIPI:
        return c
    return c._replace(pc=board.reset_pc, regs=(), frame=None, idt=0, intr=False, apic_wfs=True)


def smi_enter(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """SMI: save state at SMBASE+0xFC00.., enter SMM at SMBASE+0x8000 (SDM 32.5) with NMIs blocked
    (do_smm_enter, enter_smm: if they already were, RSM keeps them blocked)."""
    c = _interrupted(board, m.cpus[slot])
    base = c.smbase
    w = "cpu"
    m = views.write(board, m, base + SS_REVISION_ID, 4, SMM_REVISION_ID, SMM, w, None)
    m = views.write(board, m, base + SS_SMBASE, 4, base, SMM, w, None)
    m = views.write(board, m, base + SS_RFLAGS, 8, 0x2 | (EFLAGS_IF if c.intr else 0), SMM, w, None)
    m = views.put(board, m, base + SS_RIP, Obj("sym", ("rip", c.pc), 8, w), SMM, None)
    m = views.put(board, m, base + SS_GPRS, Obj("sym", ("gprs", c.regs, c.frame, c.idt), 0x80, w), SMM, None)
    entry = base + SMI_HANDLER_OFFSET
    if log.record:
        log.add(
            "smi",
            f"cpu{slot}",
            f"SMI entry: SMBASE 0x{base:x}, executes at 0x{entry:x}",
            data=("smi", slot, base),
        )
    c = c._replace(
        smm=True,
        smi=False,
        intr=False,
        mode=RUNNING,
        pc=(entry, "entry"),
        regs=(),
        frame=None,
        nmi_blocked=True,
        smm_in_nmi=c.nmi_blocked,
    )
    return set_cpu(m, slot, c)


def nmi_enter(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """NMI: vector 2, NMIs blocked until IRET (SDM 6.7.1).  Through the OS's IDT when it loaded
    one; otherwise (real mode, IDTR as RESET/INIT left it) through the real-mode IVT, whose
    entry 2 is the far pointer at 0x8 (SDM 20.1.4) — RAM the OS owns after boot."""
    c = _interrupted(board, m.cpus[slot])
    frame = (c.pc, c.regs, c.intr, c.frame)
    if c.idt:
        pc, regs, how = (c.idt, "entry"), (NMI_VECTOR,), "through the IDT"
    else:
        far = views.read(board, m, 4 * NMI_VECTOR, 4, SMM if c.smm else views.CPU)
        handler = (far >> 16) * 16 + (far & 0xFFFF)
        pc, regs, how = (handler, "entry"), (), f"through the real-mode IVT to 0x{handler:x}"
    log.add("cpu", f"cpu{slot}", f"NMI: vector 2 {how}")
    c = c._replace(mode=RUNNING, pc=pc, regs=regs, intr=False, frame=frame, nmi=False, nmi_blocked=True)
    return set_cpu(m, slot, c)


def rsm(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """RSM: reload the CPU from the save-state map and SMBASE from its field — under TCG only when
    the saved revision ID has bit 17 (helper_rsm), under KVM always (rsm_load_state_64).  It
    resumes running (no auto-HALT restart in either), NMIs unblocked unless SMM was entered
    with them blocked; what is latched is taken from the next step on (hw.apic)."""
    c = m.cpus[slot]
    base = c.smbase
    rev = views.read(board, m, base + SS_REVISION_ID, 4, SMM)
    reload = rev & REVISION_SMBASE_RELOCATION or not apic.is_tcg(board)
    new_base = views.read(board, m, base + SS_SMBASE, 4, SMM) if reload else base
    rip = views.object_at(board, m, base + SS_RIP, SMM)
    if rip is not None and rip.kind == "sym" and rip.value[0] == "rip":
        pc = rip.value[1]
    else:
        pc = (views.read(board, m, base + SS_RIP, 8, SMM), "entry")
    gprs = views.object_at(board, m, base + SS_GPRS, SMM)
    regs, frame, idt = (
        (gprs.value[1], gprs.value[2], gprs.value[3])
        if (gprs is not None and gprs.kind == "sym" and gprs.value[0] == "gprs")
        else ((), None, 0)
    )
    rflags = views.read(board, m, base + SS_RFLAGS, 8, SMM)
    if log.record:
        log.add(
            "rsm",
            f"cpu{slot}",
            f"RSM: SMBASE 0x{base:x} -> 0x{new_base:x}",
            data=("rsm", slot, base, new_base),
        )
    c = c._replace(
        smm=False,
        smbase=new_base,
        mode=RUNNING,
        pc=pc,
        regs=regs,
        frame=frame,
        idt=idt,
        intr=bool(rflags & EFLAGS_IF),
        nmi_blocked=c.smm_in_nmi,
        smm_in_nmi=False,
    )
    return set_cpu(m, slot, c)


def execute(board: Board, m: Machine, slot: int, log: Log) -> Machine | None:
    """One instruction step, followed by any steps that join it (see code.Program.step)."""
    out = _execute_one(board, m, slot, log)
    if out is None:
        return None
    for _ in range(MAX_JOINED_STEPS):
        c = out.cpus[slot]
        if c.mode != RUNNING or c.pc is None:
            break
        obj = views.object_at(board, out, c.pc[0], SMM if c.smm else views.CPU)
        prog = PROGRAMS.get(obj.value) if obj is not None and obj.kind == "code" else None  # type: ignore[arg-type]
        if prog is None or c.pc[1] not in prog.joins:
            break
        nxt = _execute_one(board, out, slot, log)
        if nxt is None:
            break
        out = nxt
    return out


def _execute_one(board: Board, m: Machine, slot: int, log: Log) -> Machine | None:
    done = step_program(board, m, slot, log)
    if done is None:
        return None
    out, rsm_requested = done
    return rsm(board, out, slot, log) if rsm_requested else out
