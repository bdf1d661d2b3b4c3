"""The exhaustive checker: breadth-first over every interleaving of every actor.

States are ``World`` values; the visited set is a dict keyed by the state value itself (its
hash is cheap: RAM keeps an incremental hash), each kept state built from shared parts
(``checker.pool``), and the moves between them recorded in flat arrays (``checker.graph``);
limits and Ctrl-C stop the search as a bounded proof (``checker.limits``).  Safety properties
are checked on every transition, so the first violation found lies at minimal depth and its
trace is a shortest attack.  ``hotplug-completes`` is checked once the space is explored:
every reachable state must be able to reach the end of the scenario (no deadlock, no livelock)
— with fair scheduling the scenario then always completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from smm_hotplug.adversaries.base import Adversary
from smm_hotplug.checker.cases import HARD_CASES, Predicate
from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.limits import Limits, Watch
from smm_hotplug.checker.pool import StatePool
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
    accel: str = "kvm"  # the accelerator whose CPU rules applied (hw.apic)

    @property
    def bound(self) -> int | None:
        """For an incomplete run: every schedule of at most this many steps was checked."""
        return self.depth if self.verdict == "incomplete" else None

    def to_json(self) -> dict:
        return {
            "design": self.design,
            "accel": self.accel,
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
        }


Progress = Callable[[int, int, int], None]  # (states, transitions, depth)


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


def explore(
    system: System,
    judged: tuple[str, ...],
    limits: Limits | None = None,
    progress: Progress | None = None,
    cases: dict[str, Predicate] | None = None,
    goal: str | None = None,
) -> Exploration:
    """BFS.  ``cases``: predicates whose first (shallowest) state is recorded; reaching ``goal``,
    one of them, ends the search with verdict "reached" and the schedule to it.  A limit (or
    Ctrl-C) ends it with verdict "incomplete"."""
    watch = Watch(limits)
    safety = frozenset(judged) - {"hotplug-completes"}
    liveness = "hotplug-completes" in judged
    init = system.initial()
    pending = dict(cases or {})  # cases not reached yet
    reached: dict[str, int] = {}
    index: dict[World, int] = {init: 0}
    pool = StatePool()
    graph = StateGraph()
    finished: list[int] = []
    frontier = [0]
    states_list: list[World] = [init]
    transitions = 0
    depth = 0

    def visit(w: World, d: int) -> bool:
        """Record the cases ``w`` is an instance of; True when it is the goal."""
        for case, holds_in in list(pending.items()):
            if holds_in(system, w):
                reached[case] = d
                del pending[case]
                if case == goal:
                    return True
        return False

    def result(verdict, prop=None, detail=None, sched=None, d=0, stopped=None) -> Exploration:
        return Exploration(verdict, prop, detail, sched or [], len(index), transitions, d, reached, stopped)

    def incomplete(why: str) -> Exploration:
        # Layers 0..depth-1 are fully expanded: every schedule of up to ``depth`` steps has
        # been checked (see CheckResult.bound).
        detail = f"stopped {why}: no schedule of up to {depth} steps violates a safety property"
        if liveness:
            detail += "; hotplug-completes not decided"
        return result("incomplete", detail=detail, d=depth, stopped=why)

    if visit(init, 0):
        return result("reached", detail=goal)

    try:
        while frontier:
            nxt: list[int] = []
            for sid in frontier:
                w = states_list[sid]
                edges: list[int] = []
                for mv in system.moves(w):
                    transitions += 1
                    tid = index.get(mv.world)
                    if tid is None:
                        system.check(mv.world, mv.log)  # state invariants: once per state
                    bad = [v for v in mv.log.violations if v.prop in safety]
                    if bad:
                        sched = [*graph.path_to(sid), (mv.actor, mv.choice)]
                        return result("violated", bad[0].prop, bad[0].text, sched, depth + 1)
                    if tid is None:
                        tid = len(states_list)
                        kept = pool.world(mv.world)
                        index[kept] = tid
                        states_list.append(kept)
                        graph.add(sid, mv.actor, mv.choice)
                        nxt.append(tid)
                        if pending and visit(kept, depth + 1):
                            return result("reached", detail=goal, sched=graph.path_to(tid), d=depth + 1)
                    if liveness:
                        edges.append(tid)
                if liveness:
                    graph.expanded(edges)
                    if not edges and system.finished(w):
                        finished.append(sid)
                why = watch.exceeded(len(index), transitions)
                if why is not None:
                    return incomplete(why)
            if progress is not None:
                progress(len(index), transitions, depth)
            frontier = nxt
            depth += 1
            why = watch.deep_enough(depth) if frontier else None
            if why is not None:
                return incomplete(why)
            # ids are assigned in BFS order: states are expanded in id order
        stuck = graph.cannot_finish(finished) if liveness else None
    except KeyboardInterrupt:
        return incomplete("when interrupted (Ctrl-C)")
    if stuck is not None:
        # Show the way into the shallowest deadlock when there is one (where the scenario stops);
        # otherwise the first state from which it can never complete (a livelock).
        done = set(finished)
        dead = next(
            (i for i in range(stuck, len(states_list)) if not graph.out_degree(i) and i not in done), None
        )
        at = stuck if dead is None else dead
        w = states_list[at]
        kind = "deadlock" if dead is not None else "livelock"
        detail = f"{kind}: from this state the scenario can never complete ({_describe_stuck(system, w)})"
        if dead is not None and stuck == 0:
            detail += "; no schedule from power-on completes"
        sched = graph.path_to(at)
        return result("violated", "hotplug-completes", detail, sched, len(sched))
    return result("holds", d=depth)


def _describe_stuck(system: System, w: World) -> str:
    from smm_hotplug.simulator import PLACES

    parts = []
    for slot, c in enumerate(w.m.cpus):
        if not c.present:
            continue
        where = ""
        if c.pc is not None:
            obj = system.plat.mem_object(w.m, c.pc[0], "smm" if c.smm else "cpu")
            name = obj.value if obj is not None else "?"
            where = PLACES.get((name, c.pc[1]), f"{name}:{c.pc[1]}")
        state = ("in SMM " if c.smm else "") + where if where else ("waiting for SIPI" if c.mode == 1 else "")
        parts.append(f"cpu{slot} {state}".strip())
    return "; ".join(parts)


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
) -> CheckResult:
    """Prove ``judged`` (recording the hard cases passed), or with ``goal`` — a hard case id and
    no properties judged — find the shortest schedule to it (verdict "reached"/"unreachable")."""
    t0 = time.perf_counter()
    chosen = HARD_CASES if goal is None else {goal: HARD_CASES[goal]}
    out = explore(
        system, judged, limits, progress, cases={c: hc.holds_in for c, hc in chosen.items()}, goal=goal
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
        accel=system.cfg.hw.accel,
    )
    if verdict in ("violated", "reached") and describe:
        res.trace = replay_trace(system, out.schedule)
    return res
