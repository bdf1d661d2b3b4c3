"""The search on several worker processes, layer by layer, with the one-process result.

Each worker owns the states whose content address falls to it (``checker.partition``).  The
driver runs a BFS layer as three phases on every worker — expand, absorb (after routing each
worker's successors to their owners), assign — and in between decides, from what the workers
report, what a one-process search would have done in that layer: the first violation (the
least (parent number, move index) key among the moves that violate a safety property and the
new states that do), a hard case reached, or the state limit.  The global numbers it gives the
new states are the ranks of their keys, i.e. the numbers the one-process search gives them; so
the verdict, the counts, the depth and the trace do not depend on the number of workers.

Workers are local processes (``LocalPool``, ``check --workers N``) or Dask actors on a
cluster (``checker.cluster.DaskPool``, ``check --cluster ADDRESS``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from smm_hotplug.checker.describe import describe_stuck
from smm_hotplug.checker.graph import cannot_finish
from smm_hotplug.checker.limits import Watch, rss_mib
from smm_hotplug.checker.partition import MOVE_BITS, Partition
from smm_hotplug.checker.search import Monitor, Options, Outcome, Progress, Snapshot
from smm_hotplug.world import System, World

INF = np.iinfo(np.int64).max


class WorkerError(RuntimeError):
    pass


# -- local worker processes ------------------------------------------------------------------------
def _serve(conn: Any, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    try:
        part = Partition(*args)
    except BaseException:
        conn.send(("err", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, call_args = msg
        try:
            conn.send(("ok", getattr(part, name)(*call_args)))
        except BaseException:
            conn.send(("err", traceback.format_exc()))


class LocalPool:
    """``workers`` processes on this machine, each holding one ``Partition``."""

    def __init__(self, workers: int, args: Callable[[int, int], tuple]) -> None:
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        ctx = mp.get_context(method)
        self.size = workers
        self.conns = []
        self.procs = []
        for i in range(workers):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(theirs, args(i, workers)), daemon=True)
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)
        for conn in self.conns:
            self._answer(conn)

    @staticmethod
    def _answer(conn: Any) -> Any:
        try:
            status, value = conn.recv()
        except EOFError:
            raise WorkerError("a worker process died") from None
        if status != "ok":
            raise WorkerError(f"a worker failed:\n{value}")
        return value

    def call_all(self, name: str, args: list[tuple]) -> list[Any]:
        for conn, a in zip(self.conns, args, strict=True):
            conn.send((name, a))
        return [self._answer(conn) for conn in self.conns]

    def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()


# -- the driver ----------------------------------------------------------------------------------------
def search_parallel(
    system: System,
    judged: tuple[str, ...],
    watch: Watch,
    cases: dict[str, Any],
    goal: str | None,
    opts: Options,
    progress: Progress | None = None,
    monitor: Monitor | None = None,
) -> Outcome:
    blob = pickle.dumps(system)
    explicit_memory = watch.limits.memory_mib is not None

    def args(index: int, workers: int) -> tuple:
        local = opts.cluster is None
        cap = (watch.memory_mib - rss_mib()) / workers if (local or explicit_memory) else None
        return (blob, judged, cases, goal, index, workers, opts.fingerprint, opts.memo, cap)

    if opts.cluster is not None:
        from smm_hotplug.checker.cluster import DaskPool

        pool: Any = DaskPool(opts.cluster, args, opts.workers if opts.workers > 1 else None)
    else:
        pool = LocalPool(opts.workers, args)
    try:
        return _Driver(pool, system, judged, watch, cases, goal, opts, progress, monitor).run()
    finally:
        pool.close()


class _Driver:
    def __init__(
        self,
        pool: Any,
        system: System,
        judged: tuple[str, ...],
        watch: Watch,
        cases: dict[str, Any],
        goal: str | None,
        opts: Options,
        progress: Progress | None,
        monitor: Monitor | None,
    ) -> None:
        self.pool = pool
        self.P = pool.size
        self.system = system
        self.liveness = "hotplug-completes" in judged
        self.watch = watch
        self.pending = list(cases)
        self.goal = goal
        self.opts = opts
        self.progress = progress
        self.monitor = monitor
        self.reached: dict[str, int] = {}
        self.states = 1
        self.transitions = 0
        self.depth = 0
        self.layers: list[int] = []
        self.finished: list[int] = []
        self.layer_starts = [0]
        self.worker_memory = [0.0] * self.P
        self.t0 = time.monotonic()

    # -- results -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        per = self.pool.call_all("stats", [()] * self.P)
        return {
            "workers": self.P,
            "visited_bytes": sum(p["visited_bytes"] for p in per),
            "worker_memory_mib": [round(p["memory"]) for p in per],
            "worker_cpu_seconds": [round(p["cpu_seconds"], 2) for p in per],
            "driver_cpu_seconds": round(time.process_time(), 2),
            "fingerprint": self.opts.fingerprint,
            "parts": [p["parts"] for p in per],
        }

    def outcome(self, verdict, prop=None, detail=None, sched=None, d=0, stopped=None, states=None) -> Outcome:
        return Outcome(
            verdict,
            prop,
            detail,
            sched or [],
            self.states if states is None else states,
            self.transitions,
            d,
            self.reached,
            stopped,
            self.stats(),
        )

    def incomplete(self, why: str, states: int | None = None) -> Outcome:
        detail = f"stopped {why}: no schedule of up to {self.depth} steps violates a safety property"
        if self.liveness:
            detail += "; hotplug-completes not decided"
        return self.outcome("incomplete", detail=detail, d=self.depth, stopped=why, states=states)

    def path_to(self, gid: int) -> list[tuple[str, int]]:
        out = []
        while gid > 0:
            entry = next(e for e in self.pool.call_all("tree_entry", [(gid,)] * self.P) if e is not None)
            gid, actor, choice = entry
            out.append((actor, choice))
        return out[::-1]

    def world_of(self, gid: int) -> World:
        got = [w for w in self.pool.call_all("world_of", [(gid,)] * self.P) if w is not None]
        if got:
            return got[0]
        w = self.system.initial()  # fingerprint mode keeps no states: replay the schedule
        for actor, choice in self.path_to(gid):
            w = self.system.replay_move(w, actor, choice).world
        return w

    def report(self, layer: int, done: int) -> None:
        if self.monitor is not None:
            self.monitor(
                Snapshot(
                    self.depth,
                    layer,
                    done,
                    self.states,
                    self.transitions,
                    time.monotonic() - self.t0,
                    rss_mib() + sum(self.worker_memory),
                    tuple(self.layers),
                )
            )

    # -- the search ----------------------------------------------------------------------------
    def run(self) -> Outcome:
        try:
            starts = self.pool.call_all("start", [()] * self.P)
            for case in list(self.pending):
                if any(case in s["reached"] for s in starts):
                    self.reached[case] = 0
                    self.pending.remove(case)
                    if case == self.goal:
                        return self.outcome("reached", detail=self.goal)
            base, size = 0, 1
            while size:
                self.report(size, 0)
                out = self.layer(base, size)
                if out is not None:
                    return out
                self.layers.append(size)
                if self.progress is not None:
                    self.progress(self.states, self.transitions, self.depth)
                base, size = base + size, self.states - base - size
                self.layer_starts.append(base)
                self.depth += 1
                why = self.watch.deep_enough(self.depth) if size else None
                if why is None:
                    why = self.watch.exceeded(self.states, self.transitions)  # time (and states)
                if why is None and rss_mib() + sum(self.worker_memory) > self.watch.memory_mib:
                    why = f"at {self.watch.memory_mib:,} MiB of memory"
                if why is not None:
                    return self.incomplete(why)
            return self.judge_liveness()
        except KeyboardInterrupt:
            return self.incomplete("when interrupted (Ctrl-C)")

    def layer(self, base: int, size: int) -> Outcome | None:
        P = self.P
        ex = self.pool.call_all("expand", [()] * P)
        stopped = [e["stopped"] for e in ex if "stopped" in e]
        if stopped:
            return self.incomplete(stopped[0])
        self.worker_memory = [e["memory"] for e in ex]
        inboxes = [[ex[p]["out"][q] for p in range(P)] for q in range(P)]
        ab = self.pool.call_all("absorb", [(inboxes[q], self.pending) for q in range(P)])
        self.worker_memory = [a["memory"] for a in ab]
        degree = np.zeros(size, np.int64)
        for e in ex:
            degree[e["gids"] - base] = e["degrees"]
            self.finished.extend(e["finished"])
        before = np.zeros(size + 1, np.int64)  # transitions of the layer before each parent
        np.cumsum(degree, out=before[1:])
        keys = [a["minkeys"] for a in ab]
        allkeys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        order = np.argsort(allkeys, kind="stable")
        ranked = allkeys[order]
        # What a one-process search meets first in this layer: a violation, the goal, or the
        # state limit after some parent (key: parent << MOVE_BITS | move).
        events: list[tuple[int, int, str, tuple]] = []
        for v in [e["violation"] for e in ex] + [a["violation"] for a in ab]:
            if v is not None:
                events.append((v[0], 0, "violated", v))
        if self.goal is not None:
            for a in ab:
                got = a["reached"].get(self.goal)
                if got is not None:
                    events.append((got[0], 1, "reached", got))
        limit = self.watch.limits.states
        if limit is not None:
            parents = np.arange(base, base + size, dtype=np.int64)
            counts = self.states + np.searchsorted(ranked >> MOVE_BITS, parents, side="right")
            over = np.flatnonzero(counts > limit)
            if over.size:
                p = int(parents[over[0]])
                events.append(((p << MOVE_BITS) | ((1 << MOVE_BITS) - 1), 2, "limit", (p,)))
        cut = min(events)[0] if events else INF
        for a in ab:
            for case, (k, _actor, _choice) in a["reached"].items():
                if k < cut and case in self.pending:
                    self.pending.remove(case)
                    self.reached[case] = self.depth + 1
        if events:
            key, _, kind, info = min(events)
            p, i = key >> MOVE_BITS, key & ((1 << MOVE_BITS) - 1)
            done_before = self.transitions + int(before[p - base])
            if kind == "limit":
                self.transitions = done_before + int(degree[p - base])
                states = self.states + int(np.searchsorted(ranked, (p + 1) << MOVE_BITS))
                return self.incomplete(f"after {limit:,} states", states)
            self.transitions = done_before + i + 1
            sched = [*self.path_to(p), (info[-2], info[-1])]
            if kind == "violated":
                states = self.states + int(np.searchsorted(ranked, key))
                return self.outcome("violated", info[1], info[2], sched, self.depth + 1, states=states)
            self.reached[self.goal] = self.depth + 1  # type: ignore[index]
            states = self.states + int(np.searchsorted(ranked, key, side="right"))
            return self.outcome("reached", detail=self.goal, sched=sched, d=self.depth + 1, states=states)
        ranks = np.empty(len(allkeys), np.int64)
        ranks[order] = np.arange(len(allkeys), dtype=np.int64)
        at = 0
        gids = []
        for k in keys:
            gids.append((self.states + ranks[at : at + len(k)],))
            at += len(k)
        self.pool.call_all("assign", gids)
        self.transitions += int(degree.sum())
        self.states += len(allkeys)
        return None

    def judge_liveness(self) -> Outcome:
        if not self.liveness:
            return self.outcome("holds", d=self.depth)
        parts = self.pool.call_all("graph", [()] * self.P)
        src = np.concatenate([p["src"] for p in parts])
        tgt = np.concatenate([p["tgt"] for p in parts])
        order = np.argsort(src, kind="stable")
        degree = np.bincount(src, minlength=self.states)
        stuck = cannot_finish(degree, tgt[order], self.finished, self.layer_starts)
        if stuck is None:
            return self.outcome("holds", d=self.depth)
        sched = self.path_to(stuck)
        kind = "deadlock" if not degree[stuck] else "livelock"
        w = self.world_of(stuck)
        detail = f"{kind}: from this state the scenario can never complete ({describe_stuck(self.system, w)})"
        return self.outcome("violated", "hotplug-completes", detail, sched, len(sched))


def default_workers() -> int:
    return os.cpu_count() or 1
