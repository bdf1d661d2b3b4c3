"""The exhaustive checker: breadth-first over every interleaving of every actor.

States are ``World`` values, kept as short tuples of ids of hash-consed parts in a numpy
visited set (``checker.store``), searched layer by layer in one process (``checker.search``)
or on several (``checker.parallel``, ``checker.cluster``) with the same result; the moves
between them are recorded in flat arrays (``checker.graph``); limits and Ctrl-C stop the
search as a bounded proof (``checker.limits``).  Safety properties
are checked on every transition, so the first violation found lies at minimal depth and its
trace is a shortest attack.  ``hotplug-completes`` is checked once the space is explored:
every reachable state must be able to reach the end of the scenario (no deadlock, no livelock)
— with fair scheduling the scenario then always completes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from smm_hotplug.adversaries.base import Adversary
from smm_hotplug.checker.cases import HARD_CASES, Predicate
from smm_hotplug.checker.limits import Limits, Watch
from smm_hotplug.checker.search import Monitor, Options, Progress, search
from smm_hotplug.checker.store import collision_probability
from smm_hotplug.invariants import PROPERTIES
from smm_hotplug.world import System, World


def judged_properties(adversaries: tuple[Adversary, ...]) -> tuple[str, ...]:
    """Every property but those an active adversary waives (see Adversary.waives)."""
    waived: set[str] = set()
    for a in adversaries:
        waived |= a.waives
    return tuple(p for p in PROPERTIES if p not in waived)


@dataclass
class TraceStep:
    actor: str
    choice: int
    text: str


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
    # How the search stored what it saw: bytes of the visited set and graph, memo hits, ...
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

    def to_json(self) -> dict:
        return {
            "design": self.design,
            "attacks": self.attacks,
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
            "fingerprint_collision_probability": self.collision_probability,
        }


class Exploration(NamedTuple):
    verdict: str  # "holds" | "violated" | "incomplete" | "reached" (a goal case)
    prop: str | None
    detail: str | None
    schedule: list[tuple[str, int]]
    states: int
    transitions: int
    depth: int
    reached: dict[str, int]  # hard case -> steps of the shortest schedule to it
    stopped: str | None = None  # incomplete: which limit stopped it ("after 1,000 states")
    stats: dict[str, Any] | None = None  # how the search stored what it saw (bytes, memo hits)


def explore(
    system: System,
    judged: tuple[str, ...],
    limits: Limits | None = None,
    progress: Progress | None = None,
    cases: dict[str, Predicate] | None = None,
    goal: str | None = None,
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> Exploration:
    """BFS.  ``cases``: predicates whose first (shallowest) state is recorded; reaching ``goal``,
    one of them, ends the search with verdict "reached" and the schedule to it.  A limit (or
    Ctrl-C) ends it with verdict "incomplete".  ``options`` say how to search (compressed or
    fingerprinted states, memoised steps, worker processes, a cluster): the result is the same."""
    options = options or Options()
    watch = Watch(limits)
    if options.workers > 1 or options.cluster is not None:
        from smm_hotplug.checker.parallel import search_parallel

        out = search_parallel(system, judged, watch, dict(cases or {}), goal, options, progress, monitor)
    else:
        out = search(system, judged, watch, dict(cases or {}), goal, options, progress, monitor)
    return Exploration(*out)


def replay_trace(system: System, schedule: list[tuple[str, int]]) -> list[TraceStep]:
    """Re-run a schedule with full logging to describe each step."""
    w = system.initial()
    out: list[TraceStep] = []
    for actor, choice in schedule:
        mv = system.replay_move(w, actor, choice, detail=True)
        plain = [e.text for e in mv.log.events if not e.detail and e.kind != "violation"]
        viol = [f"VIOLATION {v.prop}: {v.text}" for v in mv.log.violations]
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
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> CheckResult:
    """Prove ``judged`` (recording the hard cases passed), or with ``goal`` — a hard case id and
    no properties judged — find the shortest schedule to it (verdict "reached"/"unreachable")."""
    t0 = time.perf_counter()
    chosen = HARD_CASES if goal is None else {goal: HARD_CASES[goal]}
    out = explore(
        system,
        judged,
        limits,
        progress,
        cases={c: hc.holds_in for c, hc in chosen.items()},
        goal=goal,
        options=options,
        monitor=monitor,
    )
    seconds = time.perf_counter() - t0
    verdict, detail = out.verdict, out.detail
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
        stats=out.stats or {},
    )
    if verdict in ("violated", "reached") and describe:
        res.trace = replay_trace(system, out.schedule)
    return res
