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

# Called just before the hotplug block ejects a CPU: (board, machine, slot, log, whether the OS
# had asked for the removal).
EjectMonitor = Callable[["Board", Machine, int, Log, bool], None]


_MEMO_FIELDS = ("memo_decode", "memo_tseg", "memo_io", "memos")


@dataclass(frozen=True)
class Board:
    cfg: PlatformConfig
    rom: dict[int, Obj] = field(default_factory=dict)  # firmware flash: address -> code object
    reset_pc: tuple[int, str] | None = None
    disk: tuple[tuple[int, str], ...] = ()  # OS image: (address, program) pairs
    software: Any = None  # firmware/OS build options, handed to programs through the bus
    eject_monitor: EjectMonitor | None = None
    # Memo tables of the rooms (the board is static, so entries never go stale): address decode
    # and TSEG range per chipset state (hw.views), the I/O map per device state (hw.machine).
    memo_decode: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    memo_tseg: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    memo_io: dict = field(default_factory=dict, init=False, compare=False, repr=False)
    # Named memo tables of the layers above (e.g. the invariants' reading of firmware tables).
    memos: dict[str, dict] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __getstate__(self) -> dict:
        """A copy for another process (a checker's worker) leaves the memo tables behind: they
        are caches, may hold closures, and the receiver fills its own."""
        return {k: v for k, v in self.__dict__.items() if k not in _MEMO_FIELDS}

    def __setstate__(self, state: dict) -> None:
        # Frozen: fill __dict__ directly, with empty memo tables.
        self.__dict__.update(state)
        for name in _MEMO_FIELDS:
            self.__dict__[name] = {}

    def memo(self, name: str) -> dict:
        """The named memo table (created on first use)."""
        table = self.memos.get(name)
        if table is None:
            table = self.memos[name] = {}
        return table
