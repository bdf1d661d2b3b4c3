"""The breadth-first search of one process, layer by layer over compactly stored states.

A layer's states have consecutive numbers (``checker.store``: ids in BFS order); they are
expanded in that order, a chunk of them at a time: every move of every state of the chunk is
computed (CPU steps memoised, ``checker.memo``), the successors' keys are looked up in the
visited set in one batch, and the candidates are then walked in order — transition by
transition, exactly as a one-at-a-time BFS would see them — to check the state invariants of new
states, record the hard cases, keep the tree and the transitions, and notice the first
violation.  So the state numbers, the BFS parent of each state (the first move that reached
it, i.e. the least (parent, move) pair), the counts and the trace are those of the plain
sequential search, whatever the chunk size (and ``checker.parallel`` makes them the same on
any number of workers).  What the walk meets — violations, findings, hard cases, the end of the
space — is concluded by ``checker.judge``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from smm_hotplug.checker.cases import Predicate
from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.judge import INTERRUPTED, Exploration, Judge
from smm_hotplug.checker.limits import Watch, rss_mib
from smm_hotplug.checker.memo import StepMemo
from smm_hotplug.checker.store import KEY_WIDTH, Codec, Column, Visited, fingerprint_spacing_probability
from smm_hotplug.world import System, World


@dataclass(frozen=True)
class Options:
    """How to search (none of it changes the result, except that fingerprints may merge states)."""

    fingerprint: bool = False  # keep 64-bit hashes of states instead of their part ids
    memo: bool = True  # memoise CPU steps (checker.memo)
    chunk: int = 1024  # states expanded per batch
    workers: int = 1  # processes (checker.parallel)
    cluster: str | None = None  # address of a Dask scheduler (checker.cluster)


class Snapshot(NamedTuple):
    """How far a search has got (for progress displays, several times per layer)."""

    depth: int  # the layer being expanded (its states are `depth` steps from power-on)
    layer: int  # states in that layer
    done: int  # of them expanded so far
    states: int
    transitions: int
    seconds: float
    memory_mib: float
    layers: tuple[int, ...]  # sizes of the layers before


Monitor = Callable[[Snapshot], None]
Progress = Callable[[int, int, int], None]  # (states, transitions, depth) after each layer


@dataclass(frozen=True)
class Task:
    """One search, whatever engine runs it: the system, its deciding and accepted properties,
    the limits, the hard cases to record (``goal``: the one that ends it), how to search, and
    who is told how far it has got."""

    system: System
    judged: tuple[str, ...]
    accepted: tuple[str, ...]
    watch: Watch
    cases: dict[str, Predicate]
    goal: str | None
    opts: Options
    progress: Progress | None = None
    monitor: Monitor | None = None


class Engine(Judge):
    """What every search engine keeps of its task, and its progress report."""

    def __init__(self, task: Task) -> None:
        super().__init__(task.system, task.judged, task.accepted)
        self.watch = task.watch
        self.goal = task.goal
        self.opts = task.opts
        self.progress = task.progress
        self.monitor = task.monitor
        self.layers: list[int] = []  # sizes of the layers expanded so far
        self.t0 = time.monotonic()

    def snapshot(self, layer: int, done: int, states: int, memory_mib: float) -> None:
        """Tell the monitor how far the search has got in the layer being expanded."""
        if self.monitor is not None:
            elapsed = time.monotonic() - self.t0
            at = (self.depth, layer, done, states, self.transitions, elapsed, memory_mib, tuple(self.layers))
            self.monitor(Snapshot(*at))


def search(task: Task) -> Exploration:
    # The search makes and drops millions of small tuples while holding a few large tables:
    # the cyclic garbage collector would rescan those tables again and again (a third of the
    # time); the states are acyclic, so it is held off, and the young objects collected per layer.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Search(task).run()
    finally:
        if enabled:
            gc.enable()


class _Search(Engine):
    def __init__(self, task: Task) -> None:
        super().__init__(task)
        opts = task.opts
        self.pending = dict(task.cases)
        self.codec = Codec()
        self.visited = Visited(opts.fingerprint)
        self.graph = StateGraph()
        self.step = StepMemo(task.system.plat) if opts.memo else None
        self.finished = Column(np.int64)
        self._last_report = 0.0
        # Fingerprint mode keeps no keys per state: the layer being expanded and the next one
        # keep theirs here.
        self.lo = 0
        self.layer_keys: np.ndarray | None = None
        self.next_keys = Column(np.uint32, KEY_WIDTH) if opts.fingerprint else None

    # -- helpers ---------------------------------------------------------------------------
    def key_of(self, sid: int) -> tuple[int, int, int]:
        if self.layer_keys is not None:
            return tuple(self.layer_keys[sid - self.lo].tolist())  # type: ignore[return-value]
        return tuple(self.visited.keys[sid].tolist())  # type: ignore[return-value]

    def visit(self, w: World, d: int) -> bool:
        """Record the cases ``w`` is an instance of; True when it is the goal."""
        for case, holds_in in list(self.pending.items()):
            if holds_in(self.system, w):
                self.reached[case] = d
                del self.pending[case]
                if case == self.goal:
                    return True
        return False

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "visited_bytes": self.visited.nbytes,
            "graph_bytes": self.graph.nbytes,
            "parts": self.codec.part_counts(),
            "fingerprint": self.opts.fingerprint,
        }
        if self.step is not None:
            out["memo"] = self.step.stats()
        if self.opts.fingerprint:
            out["fingerprint_spacing_probability"] = fingerprint_spacing_probability(self.visited.keys.view())
        return out

    def end(self, verdict, prop=None, detail=None, sched=None, d=0, states=None) -> Exploration:
        count = len(self.visited) if states is None else states
        return self.outcome(verdict, count, self.stats(), prop, detail, sched, d)

    def stop(self, why: str, states: int) -> Exploration:
        return self.incomplete(why, states, self.stats())

    def report(self, layer: int, done: int, states: int, force: bool = False) -> None:
        if self.monitor is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 1.0:
            return
        self._last_report = now
        self.snapshot(layer, done, states, rss_mib())

    # -- the search --------------------------------------------------------------------------
    def run(self) -> Exploration:
        system = self.system
        init = system.initial()
        self.visited.add(np.array([self.codec.key(init)], np.uint32))
        if self.next_keys is not None:
            self.layer_keys = np.array([self.codec.key(init)], np.uint32)
        if self.visit(init, 0):
            return self.end("reached", detail=self.goal)
        lo, hi = 0, 1
        try:
            while lo < hi:
                self.lo = lo
                self.graph.layer_starts.append(hi)
                for a in range(lo, hi, self.opts.chunk):
                    out = self.expand(a, min(hi, a + self.opts.chunk))
                    if out is not None:
                        return out
                    self.report(hi - lo, min(hi, a + self.opts.chunk) - lo, len(self.visited))
                self.layers.append(hi - lo)
                gc.collect(1)
                if self.progress is not None:
                    self.progress(len(self.visited), self.transitions, self.depth)
                lo, hi = hi, len(self.visited)
                if self.next_keys is not None:
                    self.layer_keys = self.next_keys.view().copy()
                    self.next_keys = Column(np.uint32, KEY_WIDTH)
                self.depth += 1
                self.report(hi - lo, 0, hi, force=True)
                why = self.watch.deep_enough(self.depth) if lo < hi else None
                if why is not None:
                    return self.stop(why, len(self.visited))
            self.graph.layer_starts.pop()
            self.layer_keys = self.next_keys = None
            return self.explored(len(self.visited), self.stats, self.graph, self.finished.view())
        except KeyboardInterrupt:
            return self.stop(INTERRUPTED, len(self.visited))

    def expand(self, a: int, b: int) -> Exploration | None:
        """Expand states a..b-1 (of the current layer); the result when the search ends here."""
        system, codec, step = self.system, self.codec, self.step
        keys: list[tuple[int, int, int]] = []
        moves: list[Any] = []
        degrees: list[int] = []
        parents: list[World] = []
        for sid in range(a, b):
            pkey = self.key_of(sid)
            w = codec.world(pkey)
            if step is not None:
                step.context(w.m, codec.local_ids(pkey))
            parents.append(w)
            n0 = len(keys)
            for mv in system.moves(w, cpu_step=step):
                keys.append(codec.key_after(w, pkey, mv.world))
                moves.append(mv)
            degrees.append(len(keys) - n0)
        count = len(self.visited)
        ids, new = self.visited.add(np.array(keys, np.uint32).reshape(-1, KEY_WIDTH))
        new_list = new.tolist()
        graph = self.graph
        added_parents: list[int] = []
        added_actors: list[int] = []
        added_choices: list[int] = []
        k = 0
        for j, sid in enumerate(range(a, b)):
            for i in range(k, k + degrees[j]):
                self.transitions += 1
                mv = moves[i]
                is_new = new_list[i]
                if is_new:
                    system.check(mv.world, mv.log)  # state invariants: once per state
                violations = mv.log.violations
                if violations:
                    bad = self.deciding(violations)
                    if bad is not None:
                        sched = [*graph.path_to(sid), (mv.actor, mv.choice)]
                        return self.end("violated", bad.prop, bad.text, sched, self.depth + 1, states=count)
                    for v in self.open_findings(violations):
                        self.record(v.prop, v.text, [*graph.path_to(sid), (mv.actor, mv.choice)])
                if is_new:
                    count += 1
                    added_parents.append(sid)
                    added_actors.append(graph.actor_code(mv.actor))
                    added_choices.append(mv.choice)
                    if self.pending and self.visit(mv.world, self.depth + 1):
                        sched = [*graph.path_to(sid), (mv.actor, mv.choice)]
                        d = self.depth + 1
                        return self.end("reached", detail=self.goal, sched=sched, d=d, states=count)
            k += degrees[j]
            if self.edges_kept and degrees[j] == 0 and system.finished(parents[j]):
                self.finished.push(sid)
            why = self.watch.exceeded(count, self.transitions)
            if why is not None:
                return self.stop(why, count)
        graph.add_many(
            np.array(added_parents, np.uint32),
            np.array(added_actors, np.uint16),
            np.array(added_choices, np.int32),
        )
        if self.next_keys is not None:
            self.next_keys.append(np.array(keys, np.uint32).reshape(-1, KEY_WIDTH)[new])
        if self.edges_kept:
            graph.expanded_many(ids.astype(np.uint32), degrees)
        return None
