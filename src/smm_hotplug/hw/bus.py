"""What one instruction step of a program can do: the CPU's interface to the machine.

Software (firmware, guest OS, adversary payloads) sees the platform only through this: memory
through the CPU's current view, I/O ports, local APIC IPIs, and the few CPU instructions that
matter here (RSM, HLT, CLI/STI, LIDT, IRET, far jumps, WRMSR of an SMBASE MSR where a design has
one).  Every write carries the provenance of the code performing it.

``step_program`` runs one step of the program a CPU is executing with such a bus; the CPU core
(hw.core) decides when a CPU executes and performs an RSM the step asked for.
"""

from __future__ import annotations

from typing import Any

from smm_hotplug.code import PROGRAMS, Regs, StepResult
from smm_hotplug.hw import apic, machine, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import HALTED, RUNNING
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log, NullLog


class Bus:
    __slots__ = ("_changes", "_jump", "_stop", "board", "log", "m", "owner", "prog", "rsm_requested", "slot")

    def __init__(self, board: Board, m: Machine, slot: int, log: Log, owner: str, prog: str) -> None:
        self.board = board
        self.m = m
        self.slot = slot
        self.log = log
        self.owner = owner  # provenance of writes: who wrote the code being executed
        self.prog = prog
        self._changes: dict[str, Any] = {}
        self._jump: tuple[int, str, Regs] | None = None
        self._stop = False
        self.rsm_requested = False  # the step executed RSM (hw.core performs it)

    # -- identity ----------------------------------------------------------------------------
    @property
    def opt(self) -> Any:
        """Build options of the software image (firmware switches, OS behaviour)."""
        return self.board.software

    @property
    def cfg(self) -> Any:
        return self.board.cfg

    @property
    def apic_id(self) -> int:
        """CPUID: this CPU's initial APIC ID."""
        return self.board.cfg.apic_id(self.slot)

    @property
    def smm(self) -> bool:
        return self.m.cpus[self.slot].smm

    @property
    def smbase(self) -> int:
        """Only meaningful to SMM code (it is the base its own save-state map sits at)."""
        return self.m.cpus[self.slot].smbase

    @property
    def actor(self) -> str:
        return f"cpu{self.slot}"

    def _view(self) -> str:
        return views.SMM if self.smm else views.CPU

    # -- memory ------------------------------------------------------------------------------
    def rd(self, addr: int, size: int = 4) -> int:
        value = views.read(self.board, self.m, addr, size, self._view(), self.log)
        if self.log.record:
            self.log.add(
                "mem",
                self.actor,
                f"read{size * 8} [0x{addr:x}] -> 0x{value:x}",
                detail=True,
                data=("read", addr, self.owner),
            )
        return value

    def wr(self, addr: int, size: int, value: int) -> None:
        if self.log.record:
            self.log.add(
                "mem",
                self.actor,
                f"write{size * 8} [0x{addr:x}] <- 0x{value:x}",
                detail=True,
                data=("write", addr, self.owner),
            )
        self.m = views.write(self.board, self.m, addr, size, value, self._view(), self.owner, self.log)

    def fill(self, addr: int, size: int, byte: int) -> None:
        """REP STOSB: ``size`` bytes of ``byte``."""
        self.m = views.fill(self.board, self.m, addr, size, byte, self._view(), self.owner, self.log)

    def erase(self, addr: int, size: int) -> None:
        """Zero RAM the way firmware clears its scratch areas (the bytes keep no author)."""
        kind, end = views.decode(self.board, self.m, addr, self._view())
        if kind == views.RAM and addr + size <= end:
            self.m = self.m._replace(mem=self.m.mem.erase(addr, size))

    def cmpxchg(self, addr: int, size: int, expect: int, new: int) -> bool:
        """LOCK CMPXCHG: atomic compare-and-swap; True when the swap happened."""
        view = self._view()
        cur = views.read(self.board, self.m, addr, size, view, self.log)
        ok = cur == expect
        if ok:
            self.m = views.write(self.board, self.m, addr, size, new, view, self.owner, self.log)
        if self.log.record:
            self.log.add(
                "mem",
                self.actor,
                f"cmpxchg{size * 8} [0x{addr:x}] 0x{expect:x}->0x{new:x}: "
                f"{'swapped' if ok else f'found 0x{cur:x}'}",
                detail=True,
            )
        return ok

    def rd_many(self, addrs: list[int], size: int) -> list[int]:
        """A snapshot read of several words.

        Only for data one actor owns (e.g. the monarch's CPU table) or whose values only move
        one way while read (rendezvous flags), where a word-by-word loop cannot observe
        anything a snapshot would not.
        """
        view = self._view()
        return [views.read(self.board, self.m, a, size, view, self.log) for a in addrs]

    def rd_bytes(self, addr: int, length: int) -> bytes:
        """Read a private buffer (e.g. what fw_cfg DMA just delivered) in one go."""
        value = views.read(self.board, self.m, addr, length, self._view(), self.log)
        return value.to_bytes(length, "little")

    def wr_many(self, writes: list[tuple[int, int, int]]) -> None:
        """Several writes to data only this code touches at this point (see rd_many)."""
        view = self._view()
        for addr, size, value in writes:
            self.m = views.write(self.board, self.m, addr, size, value, view, self.owner, self.log)

    def timed_out(self, apic_id: int, waits_in: frozenset[str]) -> bool:
        """Has a timed wait for the CPU ``apic_id`` expired?

        Firmware waits for other CPUs with timeouts (PiSmmCpuDxeSmm).  The model does not count
        time; instead a timeout expires exactly when waiting longer cannot help: the CPU is
        gone, waits for SIPI, will not take an SMI, or is in SMM but busy in code other than
        ``waits_in`` (under fair timing a live CPU answers well within the timeout).
        """
        cfg = self.board.cfg
        self.log.cross = True
        for slot, c in enumerate(self.m.cpus):
            if not c.present or cfg.apic_id(slot) != apic_id:
                continue
            if not c.smm:
                return not apic.will_take_smi(self.board, c)
            if c.pc is None:
                return True
            obj = views.object_at(self.board, self.m, c.pc[0], views.SMM)
            if obj is None or obj.value not in waits_in:
                return True
            return c.mode == HALTED  # parked, or stopped on a fatal error
        return True

    def init_delay_elapsed(self, apic_id: int) -> bool:
        """The delay between INIT and SIPI (10 ms, MP specification B.4) has passed.

        The model has no clock; the delay is over once the target has acted on the INIT, or
        cannot act on it before something else happens (a halted CPU the accelerator does not
        wake for INIT, an INIT held in SMM), and it is not in SMM with work left to do.  A target
        stuck in SMM (blocked, e.g. knocking on a gate nobody opens) does not hold the delay up,
        just as a real sender would not wait longer than 10 ms for it.
        """
        cfg = self.board.cfg
        self.log.cross = True
        for slot, c in enumerate(self.m.cpus):
            if not c.present or cfg.apic_id(slot) != apic_id:
                continue
            if c.init and apic.pending(self.board, self.m, slot) == apic.TAKE_INIT:
                return False
            if not c.smm:
                return True
            return c.mode != RUNNING or step_program(self.board, self.m, slot, NullLog()) is None
        return True

    def rd_obj(self, addr: int) -> Obj | None:
        """Read a symbolic value (e.g. a saved RIP) as the object stored there."""
        return views.object_at(self.board, self.m, addr, self._view())

    def put_sym(self, addr: int, value: object, size: int) -> None:
        obj = Obj("sym", value, size, self.owner)
        self.m = views.put(self.board, self.m, addr, obj, self._view(), self.log)

    def install(self, addr: int, program: str) -> None:
        """Copy a program's code to ``addr`` (its bytes get this code's provenance)."""
        prog = PROGRAMS[program]
        if self.log.record:
            self.log.add(
                "mem",
                self.actor,
                f"installs {program} at 0x{addr:x}",
                detail=True,
                data=("write", addr, self.owner),
            )
        obj = Obj("code", program, prog.size, self.owner)
        self.m = views.put(self.board, self.m, addr, obj, self._view(), self.log)

    def load_image(self) -> None:
        """Boot loader: copy the OS image from disk into RAM (its bytes are the OS's)."""
        for addr, program in self.board.disk:
            prog = PROGRAMS[program]
            obj = Obj("code", program, prog.size, "os")
            self.m = views.put(self.board, self.m, addr, obj, self._view(), self.log)
        self.log.add("fw", self.actor, "boot loader: OS image loaded")

    # -- ports ---------------------------------------------------------------------------------
    def inp(self, port: int, size: int = 1) -> int:
        self.m, value = machine.io_read(self.board, self.m, port, size, self.slot, self.actor, self.log)
        return value

    def out(self, port: int, size: int, value: int) -> None:
        self.m = machine.io_write(self.board, self.m, port, size, value, self.slot, self.actor, self.log)

    def pci_write(self, devfn: tuple[int, int, int], reg: int, size: int, value: int) -> None:
        """Config mechanism #1: address to 0xcf8, then data at 0xcfc (+ reg & 3)."""
        bus, dev, fn = devfn
        self.out(0xCF8, 4, 0x80000000 | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC))
        self.out(0xCFC + (reg & 3), size, value)

    def pci_read(self, devfn: tuple[int, int, int], reg: int, size: int) -> int:
        bus, dev, fn = devfn
        self.out(0xCF8, 4, 0x80000000 | bus << 16 | dev << 11 | fn << 8 | (reg & 0xFC))
        value = self.inp(0xCFC + (reg & 3), size)
        return value

    # -- local APIC ------------------------------------------------------------------------------
    def ipi(self, dest: int, mode: int, vector: int = 0) -> None:
        self.m = apic.send_ipi(self.board, self.m, self.slot, dest, mode, vector, self.log)

    # -- instructions ------------------------------------------------------------------------------
    def rsm(self) -> None:
        """RSM, the step's last instruction: the core leaves SMM after the step."""
        if not self.smm:
            self.log.add("cpu", self.actor, "RSM outside SMM: #UD")
            return
        self.rsm_requested = True

    def hlt(self) -> None:
        self._changes["mode"] = HALTED

    def cli(self) -> None:
        self._changes["intr"] = False

    def sti(self) -> None:
        self._changes["intr"] = True

    def lidt(self, handler: int) -> None:
        self._changes["idt"] = handler

    def iret(self) -> None:
        """Return from the innermost interrupt frame; IRET also unblocks NMIs (SDM 6.7.1)."""
        cpu = self.m.cpus[self.slot]
        self._changes["nmi_blocked"] = False
        if cpu.frame is None:
            return
        pc, regs, intr, outer = cpu.frame
        self._changes["frame"] = outer
        self._changes["intr"] = intr
        if pc is None:
            self._stop = True  # back to a CPU that had stopped (see step_program)
            return
        self._jump = (pc[0], pc[1], regs)

    def jump(self, addr: int, label: str = "entry", regs: Regs = ()) -> None:
        self._jump = (addr, label, regs)

    def wrmsr_smbase(self, value: int) -> bool:
        """WRMSR to an SMBASE MSR.  Only where the design makes it writable outside SMM."""
        if not self.board.cfg.hw.smbase_msr_writable and not self.smm:
            self.log.add("cpu", self.actor, "WRMSR SMBASE outside SMM: #GP")
            return False
        self.log.add("cpu", self.actor, f"WRMSR SMBASE <- 0x{value:x}")
        self._changes["smbase"] = value
        return True

    def note(self, text: str) -> None:
        """A line in the timeline, attributed to the software running here."""
        kind = {"firmware": "fw", "os": "os"}.get(self.owner, "note")
        self.log.add(kind, self.actor, text)

    def claim_smram(self, base: int, size: int) -> None:
        """Ghost annotation: firmware now keeps SMM code/data in [base, base+size)."""
        claims = self.m.smram_claims
        if (base, size) not in claims:
            self.m = self.m._replace(smram_claims=(*claims, (base, size)))

    # -- completion --------------------------------------------------------------------------------
    def finish(self, result: StepResult) -> Machine:
        assert result is not None
        if isinstance(result, str):
            label, regs = result, None
        else:
            label, regs = result
        cpu = self.m.cpus[self.slot]
        if self.rsm_requested:
            return self.m
        if cpu.pc is None:
            return self.m
        changes = dict(self._changes)
        if self._stop:
            changes.update(pc=None, mode=HALTED)
        elif self._jump is not None:
            addr, jlabel, jregs = self._jump
            changes["pc"] = (addr, jlabel)
            changes["regs"] = jregs
        else:
            changes["pc"] = (cpu.pc[0], label)
            if regs is not None:
                changes["regs"] = regs
        return set_cpu(self.m, self.slot, cpu._replace(**changes))


def step_program(board: Board, m: Machine, slot: int, log: Log) -> tuple[Machine, bool] | None:
    """One step of the program the CPU in ``slot`` executes: fetch (checking that SMM runs only
    firmware-written code), run the labelled step with a bus, apply what it did.  Returns the
    new machine and whether the step executed RSM; None when the step cannot proceed yet."""
    c = m.cpus[slot]
    assert c.pc is not None
    base, label = c.pc
    view = views.SMM if c.smm else views.CPU
    obj, writer = views.fetch(board, m, base, view)
    if c.smm and writer != "firmware":
        what = obj.value if obj is not None else "data"
        log.violate(
            "smm-code-integrity",
            f"cpu{slot} executes {what} at 0x{base:x} in SMM, written by {writer or 'nobody'}",
        )
    prog = PROGRAMS.get(obj.value) if obj is not None else None  # type: ignore[arg-type]
    step = prog.steps.get(label) if prog is not None else None
    if step is None:
        log.add("cpu", f"cpu{slot}", f"executes non-code at 0x{base:x}: shutdown")
        return set_cpu(m, slot, c._replace(mode=HALTED, intr=False, pc=None)), False
    assert prog is not None
    bus = Bus(board, m, slot, log, writer or "unknown", prog.name)
    result = step(bus, c.regs)
    if result is None:
        return None
    return bus.finish(result), bus.rsm_requested
