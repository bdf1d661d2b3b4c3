"""What the platform is, as opposed to what state it is in: the static half of the machine.

A ``Board`` is what the VMM was told on its command line (``hw.config.PlatformConfig``), what is
in the firmware flash, where the CPU starts after RESET, the OS image on disk and the build
options of the software on it, and the monitors the invariants hang on the hardware.  None of
it changes while the machine runs, so the rooms of the hardware (memory views, port wiring,
interrupt controller, CPU core) take it beside the ``Machine`` value and may keep memo tables
on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smm_hotplug.hw.config import PlatformConfig
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log

# Called just before the hotplug block ejects a CPU: (board, machine, slot, log).
EjectMonitor = Callable[["Board", Machine, int, Log], None]


@dataclass(frozen=True)
class Board:
    cfg: PlatformConfig
    rom: dict[int, Obj] = field(default_factory=dict)  # firmware flash: address -> code object
    reset_pc: tuple[int, str] | None = None
    disk: tuple[tuple[int, str], ...] = ()  # OS image: (address, program) pairs
    software: Any = None  # firmware/OS build options, handed to programs through the bus
    eject_monitor: EjectMonitor | None = None

    def __getstate__(self) -> dict:
        """A copy for another process leaves the memo tables behind (they hold closures)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_memo_")}

    def memo(self, name: str) -> dict:
        """A memo table of this board (it is static, so entries never go stale)."""
        key = f"_memo_{name}"
        table = self.__dict__.get(key)
        if table is None:
            table = {}
            object.__setattr__(self, key, table)
        return table
