"""The hard cases of CPU hotplug, as predicates on a state.

A proof says nothing about schedules that never happen.  These predicates name the situations
the 2019 discussion singled out for the shipped design, so that a check can report that its
exploration actually went through them (and how many steps the shortest schedule to each takes),
and ``smm-hotplug witness`` can print and save that schedule.

Each predicate reads the machine the way a debugger would (CPU registers, chipset state, the
code a CPU is executing, the firmware's and the OS's variables); none of this is visible to the
software in the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.layout import smram_layout
from smm_hotplug.firmware.smm_core import Scan
from smm_hotplug.guest.kernel import Cscn
from smm_hotplug.hw.cpu import DEFAULT_SMBASE, SS_RIP, WAIT_SIPI
from smm_hotplug.hw.trace import NullLog
from smm_hotplug.hw.views import CPU, SMM
from smm_hotplug.world import System, World

Predicate = Callable[[System, World], bool]

# The monarch's steps from its directed SMI to the new CPU until that CPU is back in the pen
# (firmware/smm_core.py); the Scan register ``apic`` names the CPU being relocated.
_AFTER_DIRECTED_SMI = frozenset(
    {"rel_init", "rel_sipi1", "rel_sipi2", "rel_newsmbase", "rel_gate", "rel_wait_leave", "rel_wait_pen"}
)
_RELOCATING = _AFTER_DIRECTED_SMI | {"rel_clear", "rel_pen", "rel_smi"}
# CSCN's loop over the CPU hotplug block (guest/acpi.py); later labels act on what it found.
_SCANNING = frozenset(
    {"scan_lock", "scan_sel", "scan_cmd", "scan_data", "scan_uid", "scan_ins", "scan_rm", "scan_rm_clear"}
)


class HardCase(NamedTuple):
    summary: str
    holds_in: Predicate


def place(system: System, w: World, slot: int) -> tuple[str, str] | None:
    """(program, label) the CPU in ``slot`` is at, or None outside any program."""
    c = w.m.cpus[slot]
    if c.pc is None:
        return None
    obj = system.plat.mem_object(w.m, c.pc[0], SMM if c.smm else CPU)
    if obj is None or obj.kind != "code":
        return None
    return str(obj.value), c.pc[1]


def _hot_added_unrelocated(system: System, w: World) -> list[int]:
    """Slots whose CPU still has the reset SMBASE and an insert event pending."""
    insert = w.m.cpuhp.insert
    return [
        s
        for s, c in enumerate(w.m.cpus)
        if c.present and c.smbase == DEFAULT_SMBASE and insert >> s & 1 and not c.smm
    ]


def _relocating(system: System, w: World, labels: frozenset[str]) -> set[int]:
    """APIC IDs the monarch is relocating, at one of ``labels``."""
    out = set()
    for slot, c in enumerate(w.m.cpus):
        if c.smm and isinstance(c.regs, Scan):
            where = place(system, w, slot)
            if where is not None and where[0] == "fw.smm_core" and where[1] in labels:
                out.add(c.regs.apic)
    return out


def plug_before_broadcast(system: System, w: World) -> bool:
    """A hot-added CPU holds an SMI it got before the monarch's directed one: the broadcast."""
    cfg = system.cfg
    directed = _relocating(system, w, _AFTER_DIRECTED_SMI)
    return any(
        w.m.cpus[s].smi and w.m.cpus[s].mode == WAIT_SIPI and cfg.apic_id(s) not in directed
        for s in _hot_added_unrelocated(system, w)
    )


def smi_in_progress(system: System, w: World) -> bool:
    """The monarch is inside its SMI handler: the firmware's InsideSmm flag is set (CPUs that
    are only leaving SMM after the handler do not count)."""
    if not any(c.smm for c in w.m.cpus):
        return False
    return bool(system.plat.mem_read(w.m, smram_layout(system.cfg).inside_smm, 1, SMM))


def plug_after_broadcast(system: System, w: World) -> bool:
    """An SMI is being handled while a CPU plugged after it waits, with no SMI of its own."""
    if not smi_in_progress(system, w):
        return False
    return any(
        not w.m.cpus[s].smi and w.m.cpus[s].mode == WAIT_SIPI for s in _hot_added_unrelocated(system, w)
    )


def started_cpu_at_gate(system: System, w: World) -> bool:
    """A CPU the OS started itself took its first SMI in OS code and waits at the closed gate."""
    plat = system.plat
    for slot, c in enumerate(w.m.cpus):
        if not (c.smm and c.smbase == DEFAULT_SMBASE) or place(system, w, slot) != ("fw.first_smi", "entry"):
            continue
        if plat.cpu_step(w.m, slot, NullLog()) is not None:
            continue  # not waiting: the gate is open for it, or there is no gate
        rip = plat.mem_object(w.m, c.smbase + SS_RIP, SMM)
        if rip is None or rip.kind != "sym" or rip.value[0] != "rip" or rip.value[1] is None:
            continue
        _, writer = plat.fetch(w.m, rip.value[1][0], CPU)
        if writer == "os":
            return True
    return False


def burst_after_scan(system: System, w: World) -> bool:
    """The OS's CPU scan found a new CPU and went past the slot of another one plugged meanwhile."""
    insert = w.m.cpuhp.insert
    if not insert:
        return False
    for slot, c in enumerate(w.m.cpus):
        if c.smm or not isinstance(c.regs, Cscn) or not c.regs.added:
            continue
        where = place(system, w, slot)
        if where is None or where[0] != "os.irq":
            continue
        scan = c.regs
        for s in range(len(w.m.cpus)):
            if insert >> s & 1 and s not in scan.added and (s < scan.uid or where[1] not in _SCANNING):
                return True
    return False


def unplug_during_relocation(system: System, w: World) -> bool:
    """An unplug request is pending while a new CPU is being relocated."""
    if not w.m.cpuhp.remove:
        return False
    if any(c.smm and c.smbase == DEFAULT_SMBASE for c in w.m.cpus):
        return True
    return bool(_relocating(system, w, _RELOCATING))


HARD_CASES: dict[str, HardCase] = {
    "plug-before-broadcast": HardCase(
        "a CPU plugged before the hotplug SMI holds that broadcast SMI with its reset SMBASE",
        plug_before_broadcast,
    ),
    "plug-after-broadcast": HardCase(
        "a CPU is plugged while the hotplug SMI is being handled and gets no SMI of its own",
        plug_after_broadcast,
    ),
    "started-cpu-at-gate": HardCase(
        "a CPU the OS started before relocation takes its first SMI and waits at the closed gate",
        started_cpu_at_gate,
    ),
    "burst-after-scan": HardCase(
        "CPUs plugged in one burst: the OS's scan found one and had passed the other's slot",
        burst_after_scan,
    ),
    "unplug-during-relocation": HardCase(
        "an unplug request is pending while a new CPU is being relocated",
        unplug_during_relocation,
    ),
}


def get_case(case_id: str) -> HardCase:
    if case_id not in HARD_CASES:
        raise UsageError(f"unknown hard case '{case_id}' (known: {', '.join(HARD_CASES)})")
    return HARD_CASES[case_id]
