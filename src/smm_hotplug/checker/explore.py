"""The exhaustive checker: breadth-first over every interleaving of every actor.

States are ``World`` values, kept as short tuples of ids of hash-consed parts in a numpy
visited set (``checker.store``), searched layer by layer in one process (``checker.search``)
or on several (``checker.parallel``, ``checker.cluster``) with the same result; the moves
between them are recorded in flat arrays (``checker.graph``); limits and Ctrl-C stop the
search as a bounded proof (``checker.limits``).  Safety properties
are checked on every transition, so the first violation found lies at minimal depth and its
trace is a shortest attack.  ``hotplug-completes`` is checked once the space is explored:
every reachable state must be able to reach the end of the scenario (no deadlock, no livelock)
— with fair scheduling the scenario then always completes; a violation's trace runs from
power-on into the stuck end (``checker.liveness``).

Every property is judged in every check, but not every property decides the verdict: against an
adversary that lets the OS deviate from the hotplug protocol, the protocol properties are
accepted as denial of service (``Adversary.waives``).  Their violations are still recorded, each
at its first (shallowest) occurrence with its own shortest schedule, as *findings*; the search
goes on through them and stops only at a violation of a deciding property.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from smm_hotplug.adversaries.base import Adversary
from smm_hotplug.checker.cases import HARD_CASES, Predicate
from smm_hotplug.checker.judge import INTERRUPTED, Exploration
from smm_hotplug.checker.limits import Limits, Watch
from smm_hotplug.checker.search import Monitor, Options, Progress, Task, search
from smm_hotplug.checker.store import collision_probability
from smm_hotplug.invariants import PROPERTIES
from smm_hotplug.world import Scenario, System, World

__all__ = ["INTERRUPTED", "Exploration", "Monitor", "Options", "Progress"]


def judged_properties(adversaries: tuple[Adversary, ...]) -> tuple[str, ...]:
    """The deciding properties: every property but those an active adversary waives (see
    Adversary.waives)."""
    waived: set[str] = set()
    for a in adversaries:
        waived |= a.waives
    return tuple(p for p in PROPERTIES if p not in waived)


def accepted_properties(adversaries: tuple[Adversary, ...]) -> tuple[str, ...]:
    """The properties whose violations are accepted as denial of service under these adversaries:
    still judged, reported as findings, never deciding the verdict."""
    judged = judged_properties(adversaries)
    return tuple(p for p in PROPERTIES if p not in judged)


DENIAL_OF_SERVICE = "denial-of-service"


@dataclass
class TraceStep:
    actor: str
    choice: int
    text: str


@dataclass
class Finding:
    """A violation of a property accepted as denial of service, at its first occurrence."""

    prop: str
    detail: str
    schedule: list[tuple[str, int]]
    trace: list[TraceStep] = field(default_factory=list)
    kind: str = DENIAL_OF_SERVICE

    def to_json(self) -> dict:
        if self.trace:
            steps = [
                {"step": i, "actor": t.actor, "choice": t.choice, "description": t.text}
                for i, t in enumerate(self.trace)
            ]
        else:  # not replayed (a matrix cell): the schedule alone
            steps = [
                {"step": i, "actor": a, "choice": c, "description": None}
                for i, (a, c) in enumerate(self.schedule)
            ]
        return {
            "property": self.prop,
            "kind": self.kind,
            "detail": self.detail,
            "steps": len(self.schedule),
            "trace": steps,
        }


@dataclass
class CheckResult:
    design: str
    attacks: list[str]
    verdict: str  # "holds" | "violated" | "incomplete"; a witness search: "reached" | "unreachable"
    prop: str | None
    detail: str | None
    schedule: list[tuple[str, int]]
    states: int
    transitions: int
    depth: int
    seconds: float
    judged: tuple[str, ...]
    trace: list[TraceStep] = field(default_factory=list)
    # Hard cases (checker.cases) the exploration went through: steps of the shortest schedule
    # to each, None for those it never reached.
    cases: dict[str, int | None] = field(default_factory=dict)
    stopped: str | None = None  # incomplete: the limit that stopped it ("at depth 90")
    scenario: Scenario | None = None  # the configuration checked
    firmware: str = ""  # the edk2 version the firmware follows
    # hotplug-completes: each actor at the stuck end and what it waits for; where the repeating
    # cycle starts in the trace (None: a deadlock); after how many steps it could not complete.
    stuck: list[dict[str, str]] = field(default_factory=list)
    cycle_start: int | None = None
    no_return: int | None = None
    accepted: tuple[str, ...] = ()  # judged too, but accepted as denial of service (findings)
    findings: list[Finding] = field(default_factory=list)
    # Accepted properties the run could not decide: hotplug-completes needs the whole space, so
    # a run stopped by a limit or by a deciding violation leaves it open (unless already found).
    undecided: tuple[str, ...] = ()
    accel: str = "kvm"  # the accelerator whose CPU rules applied (hw.apic)
    # Historical fixes taken out of the model and later ones put in (designs/history.py).
    reverted: tuple[str, ...] = ()
    backported: tuple[str, ...] = ()
    # How the search stored what it saw: bytes of the visited set and graph, memo hits, workers...
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def collision_probability(self) -> float | None:
        """Fingerprint mode: TLC's estimate that two states were merged (checker.store)."""
        if not self.stats.get("fingerprint"):
            return None
        return collision_probability(self.states, self.transitions)

    @property
    def bound(self) -> int | None:
        """For an incomplete run: every schedule of at most this many steps was checked."""
        return self.depth if self.verdict == "incomplete" else None

    @property
    def column(self) -> str:
        """The matrix column of this check: its adversaries joined by '+', or 'none'."""
        return "+".join(self.attacks) or "none"

    def to_json(self) -> dict:
        sc = self.scenario
        return {
            "design": self.design,
            "firmware": self.firmware,
            "accel": self.accel,
            "attacks": self.attacks,
            "scenario": None
            if sc is None
            else {"boot_cpus": sc.boot_cpus, "max_cpus": sc.max_cpus, "plug": sc.plug, "unplug": sc.unplug},
            "verdict": self.verdict,
            "property": self.prop,
            "detail": self.detail,
            "trace": [
                {"step": i, "actor": t.actor, "choice": t.choice, "description": t.text}
                for i, t in enumerate(self.trace)
            ],
            "states": self.states,
            "transitions": self.transitions,
            "depth": self.depth,
            "bound": self.bound,
            "seconds": round(self.seconds, 3),
            "judged": list(self.judged),
            "cases": dict(self.cases),
            "stopped": self.stopped,
            "stuck": [
                {"actor": s["actor"], "waiting_for": s["waiting_for"], "at": s["at"]} for s in self.stuck
            ],
            "cycle_start": self.cycle_start,
            "point_of_no_return": self.no_return,
            "accepted": list(self.accepted),
            "findings": [f.to_json() for f in self.findings],
            "undecided": list(self.undecided),
            "reverted": list(self.reverted),
            "backported": list(self.backported),
            "fingerprint_collision_probability": self.collision_probability,
        }


def explore(
    system: System,
    judged: tuple[str, ...],
    limits: Limits | None = None,
    progress: Progress | None = None,
    cases: dict[str, Predicate] | None = None,
    goal: str | None = None,
    accepted: tuple[str, ...] = (),
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> Exploration:
    """BFS.  ``judged``: the deciding properties; ``accepted``: properties whose first violation
    is recorded as a finding without stopping the search.  ``cases``: predicates whose first
    (shallowest) state is recorded; reaching ``goal``, one of them, ends the search with verdict
    "reached" and the schedule to it.  A limit (or Ctrl-C) ends it with verdict "incomplete".
    ``options`` say how to search (compressed or fingerprinted states, memoised steps, worker
    processes, a cluster): the result is the same."""
    options = options or Options()
    task = Task(system, judged, accepted, Watch(limits), dict(cases or {}), goal, options, progress, monitor)
    if options.workers > 1 or options.cluster is not None:
        from smm_hotplug.checker.parallel import search_parallel

        return search_parallel(task)
    return search(task)


def replay_trace(system: System, schedule: list[tuple[str, int]]) -> list[TraceStep]:
    """Re-run a schedule with full logging to describe each step."""
    w = system.initial()
    out: list[TraceStep] = []
    broken: set[str] = set()  # a property that stays violated is named at its first step only
    for actor, choice in schedule:
        mv = system.replay_move(w, actor, choice, detail=True)
        plain = [e.text for e in mv.log.events if not e.detail and e.kind != "violation"]
        viol = [f"VIOLATION {v.prop}: {v.text}" for v in mv.log.violations if v.prop not in broken]
        broken |= {v.prop for v in mv.log.violations}
        detail = [e.text for e in mv.log.events if e.detail]
        text = "; ".join(plain + viol) or "; ".join(detail[:3]) or _where(system, w, actor)
        out.append(TraceStep(actor, choice, text))
        w = mv.world
    return out


def _where(system: System, w: World, actor: str) -> str:
    if actor.startswith("cpu"):
        c = w.m.cpus[int(actor[3:])]
        if c.pc is not None:
            obj = system.plat.mem_object(w.m, c.pc[0], "smm" if c.smm else "cpu")
            return f"runs {obj.value if obj is not None else '?'}:{c.pc[1]}"
    return "step"


def check(
    system: System,
    attacks: list[str],
    judged: tuple[str, ...],
    limits: Limits | None = None,
    progress: Progress | None = None,
    describe: bool = True,
    goal: str | None = None,
    accepted: tuple[str, ...] = (),
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> CheckResult:
    """Prove ``judged`` (recording the hard cases passed and the first violation of each
    ``accepted`` property as a finding), or with ``goal`` — a hard case id and no properties
    judged — find the shortest schedule to it (verdict "reached"/"unreachable")."""
    t0 = time.perf_counter()
    chosen = HARD_CASES if goal is None else {goal: HARD_CASES[goal]}
    out = explore(
        system,
        judged,
        limits,
        progress,
        cases={c: hc.holds_in for c, hc in chosen.items()},
        goal=goal,
        accepted=accepted,
        options=options,
        monitor=monitor,
    )
    seconds = time.perf_counter() - t0
    verdict, detail = out.verdict, out.detail
    hits = {p: (text, sched) for p, text, sched in out.findings}
    if goal is not None and verdict == "reached":
        detail = f"{goal}: {HARD_CASES[goal].summary}"
    elif goal is not None and verdict == "holds":
        verdict, detail = "unreachable", f"no reachable state is an instance of {goal}"
    elif goal is not None and verdict == "incomplete":
        detail = f"stopped {out.stopped}: no schedule of up to {out.depth} steps reaches {goal}"
    res = CheckResult(
        system.design.id,
        attacks,
        verdict,
        out.prop,
        detail,
        out.schedule,
        out.states,
        out.transitions,
        out.depth,
        seconds,
        judged,
        cases={case: out.reached.get(case) for case in chosen},
        stopped=out.stopped,
        scenario=system.scenario,
        firmware=system.design.fw.version,
        stuck=out.stuck or [],
        cycle_start=out.cycle_start,
        no_return=out.no_return,
        accepted=accepted,
        findings=[Finding(p, *hits[p]) for p in accepted if p in hits],
        undecided=tuple(
            p for p in accepted if p == "hotplug-completes" and p not in hits and not out.complete
        ),
        accel=system.cfg.hw.accel,
        reverted=system.design.reverted,
        backported=system.design.backported,
        stats=out.stats or {},
    )
    if verdict in ("violated", "reached") and describe:
        res.trace = replay_trace(system, out.schedule)
    if describe:
        for f in res.findings:
            f.trace = replay_trace(system, f.schedule)
    return res
