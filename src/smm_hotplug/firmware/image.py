"""The firmware image: what is in flash, and where the CPU starts after RESET."""

from __future__ import annotations

from smm_hotplug.code import PROGRAMS
from smm_hotplug.firmware import boot, cpu_hotplug, first_smi, smm_core  # noqa: F401  (registers programs)
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.views import ROM_BASE

RESET_PC = (ROM_BASE, "entry")


def flash() -> dict[int, Obj]:
    prog = PROGRAMS["fw.boot"]
    return {ROM_BASE: Obj("code", prog.name, prog.size, "firmware")}
