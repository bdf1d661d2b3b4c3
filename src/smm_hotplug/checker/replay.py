"""Replaying a trace file (``simulate --replay``): the schedule re-run step by step against this
model, refused unless its story, what it judges and its recorded outcome all come back (see
``checker.traces`` for the file and its schema)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smm_hotplug.adversaries.catalog import resolve
from smm_hotplug.checker.model_id import model_digest, tool_version
from smm_hotplug.checker.traces import CheckSetup, TraceFile, read
from smm_hotplug.errors import UsageError
from smm_hotplug.hw.config import Topology
from smm_hotplug.world import Scenario, System, World

# Replaying a hotplug-completes violation explores what can follow the states on its path, to
# confirm where the scenario stops being able to complete; this bounds each such search.
STUCK_STATE_LIMIT = 200_000


@dataclass
class Replay:
    """A trace file replayed: its setup, what it recorded and the run, which reproduced it."""

    path: str
    recorded: TraceFile
    setup: CheckSetup
    run: Any  # simulator.SimResult, judging what the recorded run judged
    step: int  # index of the step the recorded outcome happens at
    other_model: str | None  # the trace came from another model version (and still reproduces)

    def outcome(self) -> str:
        rec = self.recorded
        steps = len(rec.schedule)
        if rec.verdict == "reached":
            return f"hard case {rec.case} first reached after step {self.step} ({steps} steps)"
        if rec.property == "hotplug-completes":
            return f"hotplug-completes violated: the scenario can never complete after its {steps} steps"
        return f"{rec.property} violated at step {self.step}"


def _versions(rec: TraceFile) -> str | None:
    if rec.model_digest == model_digest():
        return None
    return (
        f"made by another model version (smm-hotplug {rec.tool_version}, model {rec.model_digest}; "
        f"this is smm-hotplug {tool_version()}, model {model_digest()})"
    )


def _short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def replay(path: str, detail: bool = False) -> Replay:
    """Read, validate and replay a trace file; UsageError (one line) unless it reproduces."""
    rec = read(path)
    other = _versions(rec)

    def refuse(why: str) -> UsageError:
        if other is not None:
            return UsageError(f"trace file {path} was {other}, and does not replay here: {why}")
        return UsageError(f"trace file {path}: {why}")

    def not_reproduced(why: str) -> UsageError:
        return refuse(f"trace does not reproduce: {why}")

    _consistent(rec, path)
    sc = rec.scenario
    opts = rec.options
    setup = CheckSetup(
        design=rec.design,
        scenario=Scenario(
            sc.boot_cpus,
            sc.max_cpus,
            sc.plug,
            sc.unplug,
            None if sc.topology is None else Topology(**sc.topology.model_dump()),
        ),
        attacks=tuple(rec.attacks),
        accel=opts.accel,
        budgets=tuple(rec.budgets.items()),
        vmm_keeps_smbase=opts.vmm_keeps_smbase,
        no_window_lock=opts.no_window_lock,
        no_smram_lock=opts.no_smram_lock,
        no_gate=opts.no_gate,
        no_broadcast=opts.no_broadcast,
        firmware=opts.firmware,
        smi_features=opts.smi_features,
        revert=tuple(opts.revert),
        backport=tuple(opts.backport),
    )
    try:
        system = setup.system()
    except UsageError as err:
        raise refuse(str(err)) from None
    judged = _expected_judged(rec, refuse)

    from smm_hotplug.checker.explore import replay_trace
    from smm_hotplug.simulator import simulate

    schedule = [(a, c) for a, c in rec.schedule]
    run = simulate(system, detail=detail, schedule=schedule)
    if run.outcome == "trace-diverged":
        i = len(run.steps)
        actor, choice = schedule[i]
        raise refuse(
            f"does not fit this model: step {i} ({actor}/{choice}) is not possible from the state "
            "the steps before it reach"
        )
    run.judged = judged
    for i, (step, replayed) in enumerate(zip(rec.trace, replay_trace(system, schedule), strict=True)):
        if step.description != replayed.text:
            raise refuse(
                f"trace[{i}].description says '{_short(step.description)}', but step {i} of its "
                f"schedule does '{_short(replayed.text)}'"
            )
    last = len(schedule) - 1
    safety = [(i, v) for i, v in run.violations if v.prop in judged and v.prop != "hotplug-completes"]
    if rec.verdict == "violated":
        if rec.property not in judged:
            raise not_reproduced(f"{rec.property} is not one of the properties the run judged")
        if rec.property == "hotplug-completes":
            if safety:
                i, v = safety[0]
                raise not_reproduced(f"{v.prop} is violated at step {i} before its last state is reached")
            why = _never_completes(system, schedule, rec.cycle_start, not_reproduced)
            if why is None:
                raise not_reproduced(
                    f"the file says hotplug-completes is violated, but from the state after its "
                    f"{len(schedule)} steps the scenario can still complete"
                )
            if why != rec.detail:
                raise not_reproduced(f"its last state is stuck as '{_short(why)}', not as its detail says")
            run.never_completes = why
            step = len(schedule)
        else:
            first = safety[0] if safety else None
            if first is None:
                raise not_reproduced(
                    f"the file says {rec.property} is violated at step {last}, but its {len(schedule)} "
                    "steps violate no property the run judged"
                )
            i, v = first
            if (i, v.prop) != (last, rec.property):
                raise not_reproduced(
                    f"the file says {rec.property} is violated at step {last}, "
                    f"but replayed {v.prop} is violated first, at step {i}"
                )
            if v.text != rec.detail:
                raise not_reproduced(
                    f"step {i} violates {v.prop} as '{_short(v.text)}', not as its detail says"
                )
            step = last
    else:
        step = _reached_at(system, schedule, rec.case or "", not_reproduced)
        if step != len(schedule):
            raise not_reproduced(
                f"hard case {rec.case} is first reached after {step} steps, "
                f"not after the file's {len(schedule)}"
            )
        if safety:
            i, v = safety[0]
            raise not_reproduced(f"{v.prop} is violated at step {i}")
        step = last
    return Replay(path, rec, setup, run, step, other)


def _consistent(rec: TraceFile, path: str) -> None:
    """The readable trace is the schedule, step for step; verdict and property/case agree."""
    if len(rec.trace) != len(rec.schedule):
        raise UsageError(
            f"trace file {path}: trace has {len(rec.trace)} steps but schedule has {len(rec.schedule)}"
        )
    if not rec.schedule:
        raise UsageError(f"trace file {path}: schedule: the schedule is empty")
    for i, (step, (actor, choice)) in enumerate(zip(rec.trace, rec.schedule, strict=True)):
        if step.step != i:
            raise UsageError(f"trace file {path}: trace[{i}].step is {step.step}, expected {i}")
        if (step.actor, step.choice) != (actor, choice):
            raise UsageError(
                f"trace file {path}: trace[{i}] is {step.actor}/{step.choice} but schedule[{i}] is "
                f"{actor}/{choice}"
            )
    if rec.verdict == "violated" and (rec.property is None or rec.case is not None):
        raise UsageError(f"trace file {path}: a violated trace names its property and no case")
    if rec.verdict == "reached" and (rec.case is None or rec.property is not None):
        raise UsageError(f"trace file {path}: a witness trace names its case and no property")


def _expected_judged(rec: TraceFile, refuse: Any) -> tuple[str, ...]:
    """What the recorded run judged, which must be what that kind of run judges here."""
    from smm_hotplug.checker.cases import HARD_CASES
    from smm_hotplug.checker.explore import judged_properties

    if rec.verdict == "reached":
        if rec.case not in HARD_CASES:
            raise refuse(f"case: unknown hard case '{rec.case}' (known: {', '.join(HARD_CASES)})")
        expected: tuple[str, ...] = ()  # a witness search judges no property
    else:
        expected = judged_properties(resolve(list(rec.attacks)))
    if tuple(rec.judged) != expected:
        kind = "a witness search" if rec.verdict == "reached" else "a check with these attacks"
        raise refuse(f"judged is [{', '.join(rec.judged)}] but {kind} judges [{', '.join(expected)}]")
    return expected


def _reached_at(system: System, schedule: list[tuple[str, int]], case: str, fail: Any) -> int:
    """Steps after which hard case ``case`` first holds on the schedule's path."""
    from smm_hotplug.checker.cases import HARD_CASES

    holds_in = HARD_CASES[case].holds_in
    w = system.initial()
    if holds_in(system, w):
        return 0
    for i, (actor, choice) in enumerate(schedule):
        w = system.replay_move(w, actor, choice).world
        if holds_in(system, w):
            return i + 1
    raise fail(f"the file says its schedule reaches hard case {case}, but no state on it is one")


def _never_completes(
    system: System, schedule: list[tuple[str, int]], cycle_start: int | None, fail: Any
) -> str | None:
    """The checker's detail for a run into a state from which the scenario can never complete —
    a deadlock, or (``cycle_start`` set) a cycle the schedule goes round once — or None when its
    last state can still complete."""
    from smm_hotplug.checker.liveness import stuck_end

    path = [system.initial()]
    for actor, choice in schedule:
        path.append(system.replay_move(path[-1], actor, choice).world)
    end = path[-1]
    if _can_finish(system, end):
        return None
    moving: set[str] = set()
    if cycle_start is None:
        if next(iter(system.moves(end)), None) is not None:
            raise fail("its last state is no deadlock (an actor can still move) and it names no cycle")
    else:
        if path[cycle_start] != end:
            raise fail(f"steps {cycle_start}-{len(schedule) - 1} do not return to the state they start from")
        moving = {actor for actor, _ in schedule[cycle_start:]}
    # Once the scenario cannot complete it never can again (a successor of a state that can
    # complete from nowhere completes from nowhere either): the point of no return is a boundary.
    lo, hi = 0, len(path) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _can_finish(system, path[mid]):
            lo = mid + 1
        else:
            hi = mid
    return stuck_end(system, end, len(schedule), cycle_start, lo, moving)[1]


def _can_finish(system: System, w: World) -> bool:
    """Is a finished state reachable from ``w``?  Depth first, which finds a way to the end
    quickly where there is one; up to STUCK_STATE_LIMIT states."""
    seen = {w}
    stack = [w]
    while stack:
        x = stack.pop()
        if system.finished(x):
            return True
        for mv in system.moves(x):
            if mv.world not in seen:
                if len(seen) >= STUCK_STATE_LIMIT:
                    raise UsageError(
                        f"cannot confirm the recorded hotplug-completes violation: more than "
                        f"{STUCK_STATE_LIMIT:,} states follow one of its states"
                    )
                seen.add(mv.world)
                stack.append(mv.world)
    return False
