"""The CPU core: SMM entry and the save-state map, RSM, and executing programs.

``cpu_step`` is one architectural step of a CPU: it takes what the interrupt controller
(hw.apic) says is pending — INIT (the CPU then waits for SIPI), an SMI (``smi_enter``), an
external interrupt (through the IDT the OS installed) — or else executes one step of its
program (hw.bus.step_program), plus the steps that join it, and performs an RSM the program
executed (``rsm``).  Save-state offsets are QEMU's 64-bit map (hw.cpu; SDM vol. 3C 32.4-32.5).
"""

from __future__ import annotations

from smm_hotplug.code import PROGRAMS
from smm_hotplug.hw import apic, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.bus import step_program
from smm_hotplug.hw.cpu import (
    ABSENT,
    EFLAGS_IF,
    REVISION_SMBASE_RELOCATION,
    RUNNING,
    SMI_HANDLER_OFFSET,
    SMM_REVISION_ID,
    SS_GPRS,
    SS_REVISION_ID,
    SS_RFLAGS,
    SS_RIP,
    SS_SMBASE,
    after_init,
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
    return c.mode == RUNNING


def cpu_step(board: Board, m: Machine, slot: int, log: Log) -> Machine | None:
    """One architectural step of CPU ``slot``; None when it cannot move."""
    c = m.cpus[slot]
    if c.mode == ABSENT:
        return None
    event = apic.pending(board, m, slot)
    if event == apic.TAKE_INIT:
        log.add("cpu", f"cpu{slot}", "INIT: waits for SIPI")
        return set_cpu(m, slot, after_init(c))
    if event == apic.TAKE_SMI:
        return smi_enter(board, m, slot, log)
    if event == apic.TAKE_INTR:
        c, vector = apic.acknowledge(c)
        log.add("cpu", f"cpu{slot}", f"interrupt vector 0x{vector:02x}")
        frame = (c.pc, c.regs)
        c = c._replace(mode=RUNNING, pc=(c.idt, "entry"), regs=(vector,), intr=False, frame=frame)
        return set_cpu(m, slot, c)
    if c.mode != RUNNING:
        return None
    return execute(board, m, slot, log)


def smi_enter(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """SMI: save state at SMBASE+0xFC00.., enter SMM at SMBASE+0x8000 (SDM 32.5)."""
    c = m.cpus[slot]
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
    c = c._replace(smm=True, smi=False, intr=False, mode=RUNNING, pc=(entry, "entry"), regs=(), frame=None)
    return set_cpu(m, slot, c)


def rsm(board: Board, m: Machine, slot: int, log: Log) -> Machine:
    """RSM: reload the CPU from the save-state map, SMBASE from its field when the revision ID
    says relocation is supported (SDM 32.11)."""
    c = m.cpus[slot]
    base = c.smbase
    rev = views.read(board, m, base + SS_REVISION_ID, 4, SMM)
    new_base = views.read(board, m, base + SS_SMBASE, 4, SMM) if rev & REVISION_SMBASE_RELOCATION else base
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
