"""The search on several worker processes, layer by layer, with the one-process result.

Each worker owns the states whose content address falls to it (``checker.partition``).  The
driver runs a BFS layer as three phases on every worker — expand, absorb (after routing each
worker's successors to their owners), assign — and in between decides, from what the workers
report, what a one-process search would have done in that layer: the first violation of a
deciding property (the least (parent number, move index) key among the moves that violate one
and the new states that do), the first violation of each accepted property before it (a
finding), a hard case reached, or the state limit.  The global numbers it gives the new states
are the ranks of their keys, i.e. the numbers the one-process search gives them; so the
verdict, the counts, the depth, the trace and the findings do not depend on the number of
workers.  Once the space is explored the driver gathers the BFS tree and the transitions from
the workers and ``checker.judge`` decides ``hotplug-completes`` on them, as the one-process
search does.

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

from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.judge import INTERRUPTED, Exploration
from smm_hotplug.checker.limits import rss_mib
from smm_hotplug.checker.partition import MOVE_BITS, Partition
from smm_hotplug.checker.search import Engine, Task

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

    def close(self, abort: bool = False) -> None:
        """Stop the workers: ask them to end, or (``abort``: they may be in the middle of a call)
        end them at once."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc in self.procs:
            if abort:
                proc.terminate()
            proc.join(timeout=2)
            if proc.is_alive():
                proc.terminate()
                proc.join()


# -- the driver ----------------------------------------------------------------------------------------
def search_parallel(task: Task) -> Exploration:
    opts, watch = task.opts, task.watch
    blob = pickle.dumps(task.system)
    explicit_memory = watch.limits.memory_mib is not None

    def args(index: int, workers: int) -> tuple:
        local = opts.cluster is None
        cap = (watch.memory_mib - rss_mib()) / workers if (local or explicit_memory) else None
        props = (task.judged, task.accepted, task.cases, task.goal)
        return (blob, *props, index, workers, opts.fingerprint, opts.memo, cap)

    driver = _Driver(task)
    pool: Any = None
    try:
        if opts.cluster is not None:
            from smm_hotplug.checker.cluster import DaskPool

            pool = DaskPool(opts.cluster, args, opts.workers if opts.workers > 1 else None)
        else:
            pool = LocalPool(opts.workers, args)
        return driver.run(pool)
    except KeyboardInterrupt:  # while the workers were being started
        driver.interrupted = True
        return driver.stop(INTERRUPTED)
    finally:
        if pool is not None:
            pool.close(abort=driver.interrupted)


class _Driver(Engine):
    def __init__(self, task: Task) -> None:
        super().__init__(task)
        self.pool: Any = None
        self.P = 0
        self.pending = list(task.cases)
        self.states = 1
        self.finished: list[int] = []
        self.layer_starts = [0]
        self.worker_memory: list[float] = []
        self.interrupted = False  # by Ctrl-C: the workers may be in the middle of a call

    def call(self, name: str, args: list[tuple] | None = None) -> list[Any]:
        return self.pool.call_all(name, args if args is not None else [()] * self.P)

    # -- results -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workers": self.P,
            "driver_cpu_seconds": round(time.process_time(), 2),
            "fingerprint": self.opts.fingerprint,
        }
        if self.pool is None or self.interrupted:
            return out
        per = self.call("stats")
        if self.opts.fingerprint:  # TLC's estimate from the closest fingerprints of any worker
            spacing = [p["fingerprint_spacing_probability"] for p in per]
            out["fingerprint_spacing_probability"] = max((x for x in spacing if x is not None), default=None)
        return {
            **out,
            "visited_bytes": sum(p["visited_bytes"] for p in per),
            "worker_memory_mib": [round(p["memory"]) for p in per],
            "worker_cpu_seconds": [round(p["cpu_seconds"], 2) for p in per],
            "parts": [p["parts"] for p in per],
        }

    def end(self, verdict, prop=None, detail=None, sched=None, d=0, states=None) -> Exploration:
        count = self.states if states is None else states
        return self.outcome(verdict, count, self.stats(), prop, detail, sched, d)

    def stop(self, why: str, states: int | None = None) -> Exploration:
        return self.incomplete(why, self.states if states is None else states, self.stats())

    def path_to(self, gid: int) -> list[tuple[str, int]]:
        out = []
        while gid > 0:
            entry = next(e for e in self.call("tree_entry", [(gid,)] * self.P) if e is not None)
            gid, actor, choice = entry
            out.append((actor, choice))
        return out[::-1]

    def report(self, layer: int, done: int) -> None:
        self.snapshot(layer, done, self.states, rss_mib() + sum(self.worker_memory))

    # -- the search ----------------------------------------------------------------------------
    def run(self, pool: Any) -> Exploration:
        self.pool, self.P = pool, pool.size
        self.worker_memory = [0.0] * self.P
        try:
            starts = self.call("start")
            for case in list(self.pending):
                if any(case in s["reached"] for s in starts):
                    self.reached[case] = 0
                    self.pending.remove(case)
                    if case == self.goal:
                        return self.end("reached", detail=self.goal)
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
                if not size:
                    break  # explored: no limit can stop it any more
                why = self.watch.deep_enough(self.depth) or self.watch.exceeded(self.states, self.transitions)
                if why is None and rss_mib() + sum(self.worker_memory) > self.watch.memory_mib:
                    why = f"at {self.watch.memory_mib:,} MiB of memory"
                if why is not None:
                    return self.stop(why)
            self.layer_starts.pop()
            graph = self.gather() if self.edges_kept else None
            return self.explored(self.states, self.stats, graph, self.finished)
        except KeyboardInterrupt:
            self.interrupted = True
            return self.stop(INTERRUPTED)

    def layer(self, base: int, size: int) -> Exploration | None:
        P = self.P
        lim = self.watch.limits
        left = None if lim.seconds is None else lim.seconds - (time.monotonic() - self.watch.t0)
        ex = self.call("expand", [(left,)] * P)
        stopped = [e["stopped"] for e in ex if "stopped" in e]
        if stopped:
            return self.stop(f"after {lim.seconds:g} s" if stopped[0] == "time" else stopped[0])
        self.worker_memory = [e["memory"] for e in ex]
        inboxes = [[ex[p]["out"][q] for p in range(P)] for q in range(P)]
        ab = self.call("absorb", [(inboxes[q], self.pending) for q in range(P)])
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
        # What a one-process search meets first in this layer (key: parent << MOVE_BITS | move;
        # on one transition it meets its step's violations, then its new state's, then whether
        # that state is the goal): a deciding violation, the goal, or the state limit.
        events: list[tuple[int, int, str, tuple]] = []
        for rank, reports in ((0, ex), (1, ab)):
            for r in reports:
                if r["violation"] is not None:
                    events.append((r["violation"][0], rank, "violated", r["violation"]))
        if self.goal is not None:
            for a in ab:
                got = a["reached"].get(self.goal)
                if got is not None:
                    events.append((got[0], 2, "reached", got))
        limit = lim.states
        if limit is not None:
            parents = np.arange(base, base + size, dtype=np.int64)
            counts = self.states + np.searchsorted(ranked >> MOVE_BITS, parents, side="right")
            over = np.flatnonzero(counts > limit)
            if over.size:
                p = int(parents[over[0]])
                events.append(((p << MOVE_BITS) | ((1 << MOVE_BITS) - 1), 3, "limit", (p,)))
        first = min(events, key=lambda e: e[:2]) if events else None

        def before_end(key: int) -> bool:
            """Did the one-process search get to transition ``key`` (and past its violations)?"""
            return first is None or key < first[0] or (key == first[0] and first[2] != "violated")

        for a in ab:
            for case, (k, _actor, _choice) in a["reached"].items():
                if before_end(k) and case in self.pending:
                    self.pending.remove(case)
                    self.reached[case] = self.depth + 1
        steps = [(0, f) for e in ex for f in e["findings"]]
        self.record_findings(steps + [(1, f) for a in ab for f in a["findings"]], before_end)
        if first is not None:
            key, _, kind, info = first
            p, i = key >> MOVE_BITS, key & ((1 << MOVE_BITS) - 1)
            done_before = self.transitions + int(before[p - base])
            if kind == "limit":
                self.transitions = done_before + int(degree[p - base])
                states = self.states + int(np.searchsorted(ranked, (p + 1) << MOVE_BITS))
                return self.stop(f"after {limit:,} states", states)
            self.transitions = done_before + i + 1
            sched = [*self.path_to(p), (info[-2], info[-1])]
            if kind == "violated":
                states = self.states + int(np.searchsorted(ranked, key))
                return self.end("violated", info[1], info[2], sched, self.depth + 1, states=states)
            self.reached[self.goal] = self.depth + 1  # type: ignore[index]
            states = self.states + int(np.searchsorted(ranked, key, side="right"))
            return self.end("reached", detail=self.goal, sched=sched, d=self.depth + 1, states=states)
        ranks = np.empty(len(allkeys), np.int64)
        ranks[order] = np.arange(len(allkeys), dtype=np.int64)
        at = 0
        gids = []
        for k in keys:
            gids.append((self.states + ranks[at : at + len(k)],))
            at += len(k)
        self.call("assign", gids)
        self.transitions += int(degree.sum())
        self.states += len(allkeys)
        return None

    def record_findings(self, reports: list[tuple[int, tuple]], before_end: Callable[[int], bool]) -> None:
        """The first violation of each accepted property in this layer, as the one-process search
        meets them: least key, then a step's violations before its new state's, then in the
        order the step or the state check reported them.  Reports: (0 from a step, 1 from a new
        state; (key, property, detail, actor, choice, place))."""
        best: dict[str, tuple] = {}
        for rank, (key, prop, text, actor, choice, pos) in reports:
            if prop in self.found or not before_end(key):
                continue
            order = (key, rank, pos)
            if prop not in best or order < best[prop][0]:
                best[prop] = (order, text, actor, choice)
        for prop, (order, text, actor, choice) in sorted(best.items(), key=lambda item: item[1][0]):
            self.record(prop, text, [*self.path_to(order[0] >> MOVE_BITS), (actor, choice)])

    def gather(self) -> StateGraph:
        """The whole BFS tree and every transition, from the workers (for hotplug-completes)."""
        n = self.states
        parent = np.full(n, -1, np.int64)
        actor = np.zeros(n, np.uint16)
        choice = np.zeros(n, np.int32)
        codes: dict[str, int] = {}
        for t in self.call("tree"):
            remap = np.array([codes.setdefault(a, len(codes)) for a in t["actor_names"]] or [0], np.uint16)
            g = t["gid"]
            parent[g] = t["parent"]
            actor[g] = remap[t["actor"]]
            choice[g] = t["choice"]
        parts = self.call("graph")
        src = np.concatenate([p["src"] for p in parts])
        move = np.concatenate([p["move"] for p in parts])
        tgt = np.concatenate([p["tgt"] for p in parts])
        order = np.lexsort((move, src))  # each state's successors in the order of its moves
        degree = np.bincount(src, minlength=n)
        return StateGraph.from_arrays(
            parent, actor, choice, list(codes), degree, tgt[order], self.layer_starts
        )


def default_workers() -> int:
    return os.cpu_count() or 1
