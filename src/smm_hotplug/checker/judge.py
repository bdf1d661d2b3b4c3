"""What a search concludes, however it was run: the verdict, the findings, the hang.

Every search engine (one process, ``checker.search``; several, ``checker.parallel``) walks the
transitions in the order of a one-process breadth-first search and tells a ``Judge`` what it
meets there: a violation of a deciding property ends the search (the first one met lies at
minimal depth, its schedule is a shortest trace); the first violation of each property accepted
as denial of service is kept as a finding with its own shortest schedule and the search goes
on; a limit or Ctrl-C ends it as a bounded proof.  Once the whole space is explored the judge
decides ``hotplug-completes`` on the graph of transitions (``checker.liveness``): as the
verdict where it decides, as one more finding where it is accepted.  So the result of every
engine is built by this one class and cannot differ in how it is put together.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.liveness import find_stuck
from smm_hotplug.world import System

LIVENESS = "hotplug-completes"
INTERRUPTED = "when interrupted (Ctrl-C)"  # CheckResult.stopped of a search ended by Ctrl-C


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
    # Accepted properties: the first violation of each, (property, detail, schedule), in the order found.
    findings: tuple[tuple[str, str, list[tuple[str, int]]], ...] = ()
    complete: bool = False  # the whole reachable space was explored
    stuck: list[dict[str, str]] | None = None  # hotplug-completes: see liveness.Stuck
    cycle_start: int | None = None
    no_return: int | None = None
    stats: dict[str, Any] | None = None  # how the search stored what it saw (bytes, memo hits)


class Judge:
    """The properties of one search and what it has found so far."""

    def __init__(self, system: System, judged: tuple[str, ...], accepted: tuple[str, ...]) -> None:
        self.system = system
        self.safety = frozenset(judged) - {LIVENESS}
        self.liveness = LIVENESS in judged
        # Accepted safety properties: their first violations become findings.
        self.watched = frozenset(accepted) - {LIVENESS} - self.safety
        # The transitions are kept for the hotplug-completes analysis, deciding or accepted.
        self.edges_kept = self.liveness or LIVENESS in accepted
        self.found: dict[str, tuple[str, list[tuple[str, int]]]] = {}
        self.reached: dict[str, int] = {}
        self.transitions = 0
        self.depth = 0

    def deciding(self, violations: list) -> Any:
        """The first violation among ``violations`` of a deciding safety property, or None."""
        for v in violations:
            if v.prop in self.safety:
                return v
        return None

    def open_findings(self, violations: list) -> list:
        """The violations among ``violations`` of accepted properties not found yet (first of
        each property)."""
        out, seen = [], set()
        for v in violations:
            if v.prop in self.watched and v.prop not in self.found and v.prop not in seen:
                seen.add(v.prop)
                out.append(v)
        return out

    def record(self, prop: str, text: str, schedule: list[tuple[str, int]]) -> None:
        """The first violation of the accepted property ``prop``, with its schedule."""
        if prop not in self.found:
            self.found[prop] = (text, schedule)

    # -- results -------------------------------------------------------------------------------
    def outcome(
        self,
        verdict: str,
        states: int,
        stats: dict[str, Any],
        prop: str | None = None,
        detail: str | None = None,
        sched: list[tuple[str, int]] | None = None,
        d: int = 0,
        stopped: str | None = None,
        complete: bool = False,
    ) -> Exploration:
        return Exploration(
            verdict,
            prop,
            detail,
            sched or [],
            states,
            self.transitions,
            d,
            self.reached,
            stopped,
            tuple((p, text, s) for p, (text, s) in self.found.items()),
            complete,
            stats=stats,
        )

    def incomplete(self, why: str, states: int, stats: dict[str, Any]) -> Exploration:
        # Layers 0..depth-1 are fully expanded: every schedule of up to ``depth`` steps has
        # been checked (see CheckResult.bound).
        what = "a deciding safety property" if self.watched or self.found else "a safety property"
        detail = f"stopped {why}: no schedule of up to {self.depth} steps violates {what}"
        if self.liveness:
            detail += f"; {LIVENESS} not decided"
        return self.outcome("incomplete", states, stats, detail=detail, d=self.depth, stopped=why)

    def explored(
        self, states: int, stats: Any, graph: StateGraph | None = None, finished: Any = ()
    ) -> Exploration:
        """The whole space is explored: decide hotplug-completes on ``graph`` (every transition,
        ``finished`` the states where the scenario is complete) where it is judged or accepted.
        ``stats``: a dict, or a function giving it (called after the analysis)."""
        stuck = None
        if self.edges_kept:
            assert graph is not None, "the transitions were to be kept"
            stuck = find_stuck(self.system, graph, np.asarray(finished, np.int64))
        info = stats() if callable(stats) else stats
        if stuck is not None and self.liveness:
            out = self.outcome(
                "violated",
                states,
                info,
                LIVENESS,
                stuck.detail,
                stuck.schedule,
                len(stuck.schedule),
                complete=True,
            )
            return out._replace(stuck=stuck.stuck, cycle_start=stuck.cycle_start, no_return=stuck.no_return)
        if stuck is not None:
            self.found[LIVENESS] = (stuck.detail, stuck.schedule)
        return self.outcome("holds", states, info, d=self.depth, complete=True)
