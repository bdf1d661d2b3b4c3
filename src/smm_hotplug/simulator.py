"""The simulator: follow one schedule of the system and keep the whole timeline.

At every step it lists the moves every actor can make and takes one (uniformly at random from
a seeded generator, or as a recorded trace dictates), checks the invariants, and records the
events.  The run ends when the management script is done and the guest has settled, when no
actor can move (deadlock), or at the step limit.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import kernel
from smm_hotplug.hw.cpu import MODE_NAMES
from smm_hotplug.hw.trace import Event, Violation
from smm_hotplug.invariants import PROPERTIES, firmware_table
from smm_hotplug.world import UNPLUG, System, World

DEFAULT_STEP_LIMIT = 50_000

# Friendly names of the places a CPU usually waits in.
PLACES = {
    ("os.kernel", "idle"): "OS idle",
    ("os.ap_start", "idle"): "OS idle",
    ("os.irq", "dead"): "offline in the OS",
    ("fw.pen", "halt"): "firmware pen",
    ("fw.ap_park", "park"): "firmware AP park",
    ("fw.smm_core", "ap_parked"): "parked in SMM",
    ("fw.first_smi", "entry"): "at the gate",
}


@dataclass
class StepRecord:
    index: int
    actor: str
    choice: int
    events: list[Event]
    violations: list[Violation]


@dataclass
class SimResult:
    system: System
    steps: list[StepRecord]
    final: World
    outcome: str  # "finished" | "deadlock" | "step-limit"; a schedule: "trace-end" | "trace-diverged"
    seed: int | None = None
    violations: list[tuple[int, Violation]] = field(default_factory=list)
    # The properties judged: all by default; a replayed trace judges what its recorded run judged.
    judged: tuple[str, ...] | None = None
    # A replayed hotplug-completes violation: why the scenario can never complete from ``final``.
    never_completes: str | None = None

    def first_violation(self, prop: str) -> tuple[int, Violation] | None:
        return next(((i, v) for i, v in self.violations if v.prop == prop), None)

    def violation_runs(self) -> dict[tuple[str, str], list[tuple[int, int]]]:
        """Each distinct violation (property, text), in order of first appearance, with the runs
        of consecutive steps after which it held: a state invariant stays violated for as long as
        the state that breaks it lasts, and is reported after every one of those steps."""
        runs: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for i, v in self.violations:
            spans = runs.setdefault((v.prop, v.text), [])
            if spans and spans[-1][1] in (i, i - 1):
                spans[-1] = (spans[-1][0], i)
            else:
                spans.append((i, i))
        return runs

    def property_status(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for prop in PROPERTIES:
            if self.judged is not None and prop not in self.judged:
                out[prop] = {"status": "not judged", "first": None}
                continue
            if prop == "hotplug-completes":
                if self.never_completes is not None:
                    out[prop] = {
                        "status": "violated",
                        "first": {"step": len(self.steps), "text": self.never_completes},
                    }
                    continue
                if self.outcome == "trace-end":
                    out[prop] = {"status": "not reached", "first": None}
                    continue
                ok = self.outcome == "finished"
                out[prop] = {
                    "status": "holds" if ok else "violated",
                    "first": None if ok else {"step": len(self.steps), "text": _incomplete(self)},
                }
                continue
            hit = self.first_violation(prop)
            out[prop] = {
                "status": "violated" if hit else "holds",
                "first": {"step": hit[0], "text": hit[1].text} if hit else None,
            }
        return out

    @property
    def ok(self) -> bool:
        return all(p["status"] != "violated" for p in self.property_status().values())


def _incomplete(res: SimResult) -> str:
    if res.outcome == "deadlock":
        return "deadlock: no actor can move, and the scenario is not complete"
    return f"the scenario did not complete within {len(res.steps)} steps"


# An operator's policy: given its next action (world.PLUG, UNPLUG, REPLUG) and the slots it could
# act on, the slot it picks.
Operator = Callable[[str, list[int]], int]


def fixed_operator(kind: str, slots: list[int]) -> int:
    """Plug into the lowest free slot, remove the highest present CPU (the operator of the
    model's earlier versions; a script that always uses the same slots)."""
    return max(slots) if kind == UNPLUG else min(slots)


def simulate(
    system: System,
    seed: int = 0,
    detail: bool = False,
    step_limit: int = DEFAULT_STEP_LIMIT,
    schedule: list[tuple[str, int]] | None = None,
    operator: Operator | None = None,
) -> SimResult:
    """Run one schedule: random from ``seed``, or the given (actor, choice) list.  ``operator``
    picks the slot whenever the random schedule has the operator act (default: drawn from the
    seed like every other choice); the schedule's timing is the seed's either way."""
    rng = random.Random(seed)
    w = system.initial()
    steps: list[StepRecord] = []
    violations: list[tuple[int, Violation]] = []
    outcome = "step-limit"
    for i in range(step_limit):
        if schedule is None and system.finished(w):
            outcome = "finished"
            break
        if schedule is not None and i >= len(schedule):
            outcome = "finished" if system.finished(w) else "trace-end"
            break
        moves = list(system.moves(w, record=True, detail=detail))
        if not moves:
            outcome = "deadlock" if schedule is None else "trace-diverged"
            break
        if schedule is None:
            mv = rng.choice(moves)
            if operator is not None and mv.actor == "mgmt":
                options = {m.choice: m for m in moves if m.actor == "mgmt"}
                mv = options[operator(system.script[w.done], sorted(options))]
        else:
            actor, choice = schedule[i]
            matching = [m for m in moves if m.actor == actor and m.choice == choice]
            if not matching:
                outcome = "trace-diverged"
                break
            mv = matching[0]
        system.check(mv.world, mv.log)
        steps.append(StepRecord(i, mv.actor, mv.choice, mv.log.events, mv.log.violations))
        violations += [(i, v) for v in mv.log.violations]
        w = mv.world
    return SimResult(system, steps, w, outcome, seed if schedule is None else None, violations)


def cpu_summary(system: System, w: World) -> list[dict]:
    """Per CPU slot: APIC ID, SMBASE, run state, firmware table slot and TSEG tile."""
    plat = system.plat
    m = w.m
    lay = FW.smram_layout(plat.cfg)
    table = firmware_table(plat, m)
    tiles = {lay.tile_smbase(i): i for i in range(lay.max_cpus)}
    rows = []
    for slot, c in enumerate(m.cpus):
        apic = plat.cfg.apic_id(slot)
        state = MODE_NAMES[c.mode] + (" in SMM" if c.smm else "")
        if c.present and c.pc is not None:
            obj = plat.mem_object(m, c.pc[0], "smm" if c.smm else "cpu")
            if obj is not None and obj.kind == "code":
                where = PLACES.get((obj.value, c.pc[1]), f"{obj.value}:{c.pc[1]}")
                state += f" ({where})"
        rows.append(
            {
                "slot": slot,
                "apic_id": apic,
                "present": c.present,
                "smbase": c.smbase if c.present else None,
                "tile": tiles.get(c.smbase) if c.present else None,
                "state": state,
                "firmware_slot": table.index(apic) if apic in table else None,
                "os_online": bool(plat.mem_read(m, kernel.online_flag(apic), 1, "cpu"))
                if c.present
                else False,
            }
        )
    return rows
