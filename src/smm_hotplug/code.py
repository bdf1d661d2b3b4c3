"""Programs: the software that CPUs execute, as labelled atomic steps.

A program is installed in memory as a *code object* (see hw.memory); a CPU's program counter
is ``(address of the code object, label)``.  Each step is a function ``step(bus, regs)``
that performs at most one access visible to other actors (a port, a shared memory word, an
IPI) plus local computation, and returns the next label — ``(label, regs)`` to change
registers — or ``None`` when it cannot proceed yet (a spin-wait whose condition is false;
spinning changes nothing, so it is modelled as a disabled step).  Firmware and guest OS
programs are written against :class:`smm_hotplug.hw.bus.Bus`, i.e. only through registers,
ports, memory and IPIs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Regs = tuple[Any, ...]
StepResult = str | tuple[str, Regs] | None
# A step gets the bus of the CPU executing it (hw.bus.Bus; the hardware imports this module,
# not the other way round) and the program's registers.
Step = Callable[[Any, Regs], StepResult]


class Program:
    def __init__(self, name: str, owner: str, size: int = 0x200, doc: str = "") -> None:
        self.name = name
        self.owner = owner  # who authors it: "firmware" or "os"
        self.size = size
        self.doc = doc
        self.steps: dict[str, Step] = {}
        self.joins: set[str] = set()
        self.waits: dict[str, str] = {}

    def step(self, label: str, joins: bool = False, waits: str | None = None) -> Callable[[Step], Step]:
        """Register a step.  ``joins``: the step runs in the same transition as the one before
        it on this CPU — it touches nothing another actor could observe in between (or only
        something whose observer waits for it anyway), so a separate interleaving point would
        only multiply states without adding behaviours.  ``waits``: for a step that can wait
        (a spin whose condition is false, or HLT), what a CPU stopped there is doing, in words
        ("spins in the monarch's wait for AboutToLeaveSmm"); a stuck run names it."""

        def register(fn: Step) -> Step:
            if label in self.steps:
                raise ValueError(f"{self.name}: duplicate label {label}")
            self.steps[label] = fn
            if joins:
                self.joins.add(label)
            if waits is not None:
                self.waits[label] = waits
            return fn

        return register

    def __repr__(self) -> str:
        return f"Program({self.name})"


PROGRAMS: dict[str, Program] = {}


def program(name: str, owner: str, size: int = 0x200, doc: str = "") -> Program:
    if name in PROGRAMS:
        raise ValueError(f"program {name} defined twice")
    prog = Program(name, owner, size, doc)
    PROGRAMS[name] = prog
    return prog


def reg(regs: Regs, index: int, default: Any = 0) -> Any:
    return regs[index] if index < len(regs) else default
