"""The exhaustive checker: breadth-first over every interleaving of every actor.

States are ``World`` values; the visited set is a dict keyed by the state value itself (its
hash is cheap: RAM keeps an incremental hash).  Safety properties are checked on every
transition, so the first violation found lies at minimal depth and its trace is a shortest
attack.  ``hotplug-completes`` is checked once the space is explored: every reachable state
must be able to reach the end of the scenario (no deadlock, no livelock) — with fair
scheduling the scenario then always completes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from smm_hotplug.adversaries.base import Adversary
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
    verdict: str  # "holds" | "violated" | "incomplete"
    prop: str | None
    detail: str | None
    schedule: list[tuple[str, int]]
    states: int
    transitions: int
    depth: int
    seconds: float
    judged: tuple[str, ...]
    trace: list[TraceStep] = field(default_factory=list)

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
        }


Progress = Callable[[int, int, int], None]  # (states, transitions, depth)


def explore(
    system: System,
    judged: tuple[str, ...],
    max_states: int | None = None,
    progress: Progress | None = None,
) -> tuple[str, str | None, str | None, list[tuple[str, int]], int, int, int]:
    """BFS.  Returns (verdict, property, detail, schedule, states, transitions, depth)."""
    safety = frozenset(judged) - {"hotplug-completes"}
    liveness = "hotplug-completes" in judged
    init = system.initial()
    index: dict[World, int] = {init: 0}
    parent: list[tuple[int, str, int]] = [(-1, "", 0)]
    depth_of: list[int] = [0]
    succ: list[list[int]] = []
    finished: list[int] = []
    frontier = [0]
    states_list: list[World] = [init]
    transitions = 0
    depth = 0

    def path_to(i: int) -> list[tuple[str, int]]:
        out = []
        while i > 0:
            p, actor, choice = parent[i]
            out.append((actor, choice))
            i = p
        return out[::-1]

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
                    sched = [*path_to(sid), (mv.actor, mv.choice)]
                    return "violated", bad[0].prop, bad[0].text, sched, len(index), transitions, depth + 1
                if tid is None:
                    tid = len(states_list)
                    index[mv.world] = tid
                    states_list.append(mv.world)
                    parent.append((sid, mv.actor, mv.choice))
                    depth_of.append(depth + 1)
                    nxt.append(tid)
                if liveness:
                    edges.append(tid)
            if liveness:
                succ.append(edges)
                if not edges and system.finished(w):
                    finished.append(sid)
            if max_states is not None and len(index) > max_states:
                # Layers 0..depth-1 are fully expanded: every schedule of up to ``depth`` steps
                # has been checked (see CheckResult.bound).
                return (
                    "incomplete",
                    None,
                    f"stopped after {max_states:,} states: no schedule of up to {depth} steps "
                    "violates a safety property" + ("; hotplug-completes not decided" if liveness else ""),
                    [],
                    len(index),
                    transitions,
                    depth,
                )
        if progress is not None:
            progress(len(index), transitions, depth)
        frontier = nxt
        depth += 1
        # ids are assigned in BFS order, so succ[] stays aligned with state ids
    if liveness:
        stuck = _cannot_finish(succ, finished)
        if stuck is not None:
            w = states_list[stuck]
            kind = "deadlock" if not succ[stuck] else "livelock"
            detail = f"{kind}: from this state the scenario can never complete ({_describe_stuck(system, w)})"
            return (
                "violated",
                "hotplug-completes",
                detail,
                path_to(stuck),
                len(index),
                transitions,
                depth_of[stuck],
            )
    return "holds", None, None, [], len(index), transitions, depth


def _cannot_finish(succ: list[list[int]], finished: list[int]) -> int | None:
    """The first state (in BFS order, so at minimal depth) from which no finished state is reachable."""
    n = len(succ)
    preds: list[list[int]] = [[] for _ in range(n)]
    for s, outs in enumerate(succ):
        for t in outs:
            preds[t].append(s)
    good = bytearray(n)
    stack = list(finished)
    for f in finished:
        good[f] = 1
    while stack:
        t = stack.pop()
        for s in preds[t]:
            if not good[s]:
                good[s] = 1
                stack.append(s)
    for s in range(n):
        if not good[s]:
            return s
    return None


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
    max_states: int | None = None,
    progress: Progress | None = None,
    describe: bool = True,
) -> CheckResult:
    t0 = time.perf_counter()
    verdict, prop, detail, sched, states, transitions, depth = explore(system, judged, max_states, progress)
    seconds = time.perf_counter() - t0
    res = CheckResult(
        system.design.id, attacks, verdict, prop, detail, sched, states, transitions, depth, seconds, judged
    )
    if verdict == "violated" and describe:
        res.trace = replay_trace(system, sched)
    return res
