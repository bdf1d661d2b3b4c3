"""One worker's share of a search on several processes: the states it owns, and its phases.

A state belongs to the worker its content address says (``owner``: the parts' 64-bit content
addresses, ``checker.content``, mixed and taken modulo the number of workers), so every copy of
a state found anywhere goes to the same worker, which alone keeps it.  Each BFS layer runs in
three phases, driven by ``checker.parallel``:

* ``expand``: the worker computes every move of each state of the layer it owns, in the order
  of their global numbers, and sends each successor to its owner as (parent number, move
  index, actor, choice, content addresses of its three parts) — the parts' values only the first
  time that receiver needs them.  A move that violates a safety property is not sent: its
  (parent, move) key is reported instead.
* ``absorb``: the owner sorts what it received by (parent number, move index) — the order in
  which a one-process BFS meets those transitions — drops states it already has, and keeps the
  new ones with the first transition that reached each as their BFS parent; it checks their
  state invariants and hard cases, and reports their keys.
* ``assign``: the driver ranks all workers' new keys into global numbers — exactly the numbers
  the one-process search gives those states — and tells each worker those of its own.
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

from smm_hotplug.checker.content import digest
from smm_hotplug.checker.limits import rss_mib
from smm_hotplug.checker.memo import StepMemo
from smm_hotplug.checker.store import KEY_WIDTH, Codec, Column, Visited
from smm_hotplug.hw.trace import NullLog
from smm_hotplug.world import System, World

MOVE_BITS = 16  # a key is parent number << MOVE_BITS | move index
CANDIDATE = np.dtype(
    [("src", "<i8"), ("move", "<u2"), ("actor", "<u2"), ("choice", "<i4"), ("parts", "<u8", (KEY_WIDTH,))]
)
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], np.uint64)


def owners(parts: np.ndarray, workers: int) -> np.ndarray:
    """The worker owning each state, from its parts' content addresses ((n, KEY_WIDTH) uint64)."""
    with np.errstate(over="ignore"):
        h = (parts * _MIX[: parts.shape[1]]).sum(axis=1, dtype=np.uint64)
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return (h % np.uint64(workers)).astype(np.int64)


class Partition:
    """The states one worker owns (see the module note); also usable as a Dask actor."""

    def __init__(
        self,
        system_blob: bytes,
        judged: tuple[str, ...],
        cases: dict[str, Any],
        goal: str | None,
        index: int,
        workers: int,
        fingerprint: bool,
        memo: bool,
        memory_mib: float | None,
    ) -> None:
        self.system: System = pickle.loads(system_blob)
        self.safety = frozenset(judged) - {"hotplug-completes"}
        self.liveness = "hotplug-completes" in judged
        self.cases = dict(cases)
        self.goal = goal
        self.index = index
        self.workers = workers
        self.memory_mib = memory_mib
        self.codec = Codec()
        self.visited = Visited(fingerprint)
        self.fingerprint = fingerprint
        self.step = StepMemo(self.system.plat) if memo else None
        # Per kept state (local number): global number, BFS parent (global), actor, choice.
        self.gid = Column(np.int64)
        self.parent = Column(np.int64)
        self.actor = Column(np.uint16)
        self.choice = Column(np.int32)
        self.actor_names: list[str] = []
        self.actor_codes: dict[str, int] = {}
        # Content addresses of local parts, by kind (cpus, mem, rest), and back.
        self.address: list[list[int]] = [[] for _ in range(KEY_WIDTH)]
        self.local: list[dict[int, int]] = [{} for _ in range(KEY_WIDTH)]
        self._address_arrays = [np.zeros(0, np.uint64) for _ in range(KEY_WIDTH)]
        self.sent: list[set[tuple[int, int]]] = [set() for _ in range(workers)]  # (kind, address)
        self.layer_lo = 0
        self.layer_hi = 0
        self.layer_keys: np.ndarray | None = None  # fingerprint mode: the layer's part ids
        self.pending_new: np.ndarray | None = None
        self.pending_edges: tuple[np.ndarray, np.ndarray] | None = None
        self.edges_src = Column(np.int64)
        self.edges_tgt = Column(np.int64)
        self.next_keys: np.ndarray | None = None

    # -- parts ---------------------------------------------------------------------------------
    def _tables(self) -> tuple[Any, Any, Any]:
        c = self.codec
        return c.cpus, c.mem, c.rest

    def _address(self, kind: int, pid: int) -> int:
        known = self.address[kind]
        while len(known) <= pid:
            table = self._tables()[kind]
            value = table.values[len(known)]
            a = digest(value)
            other = self.local[kind].setdefault(a, len(known))
            if other != len(known):
                raise RuntimeError(f"two different parts with content address {a:#x}")
            known.append(a)
        return known[pid]

    def _addresses(self, kind: int, upto: int) -> np.ndarray:
        """Content addresses of local parts 0..upto of ``kind``, as an array."""
        have = self._address_arrays[kind]
        if len(have) <= upto:
            self._address(kind, upto)
            have = self._address_arrays[kind] = np.array(self.address[kind], np.uint64)
        return have

    def _learn(self, kind: int, address: int, value: Any) -> int:
        table = self._tables()[kind]
        pid = table.id(value)
        self._address(kind, pid)  # records the address of every part up to pid
        if self.address[kind][pid] != address:
            raise RuntimeError(f"part sent with content address {address:#x} has another one here")
        return pid

    def _actor(self, name: str) -> int:
        code = self.actor_codes.get(name)
        if code is None:
            code = self.actor_codes[name] = len(self.actor_names)
            self.actor_names.append(name)
        return code

    # -- the initial state ---------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """Keep the initial state if this worker owns it."""
        init = self.system.initial()
        key = self.codec.key(init)
        parts = np.array([[self._address(k, key[k]) for k in range(KEY_WIDTH)]], np.uint64)
        mine = int(owners(parts, self.workers)[0]) == self.index
        if mine:
            self.visited.add(np.array([key], np.uint32))
            self.gid.push(0)
            self.parent.push(-1)
            self.actor.push(0)
            self.choice.push(0)
            self.layer_lo, self.layer_hi = 0, 1
            self.layer_keys = np.array([key], np.uint32) if self.fingerprint else None
        reached = [c for c, holds in self.cases.items() if holds(self.system, init)] if mine else []
        return {"mine": mine, "reached": reached}

    # -- phase 1 -------------------------------------------------------------------------------
    def _key(self, local: int) -> tuple[int, int, int]:
        if self.layer_keys is not None:
            return tuple(self.layer_keys[local - self.layer_lo].tolist())  # type: ignore[return-value]
        return tuple(self.visited.keys[local].tolist())  # type: ignore[return-value]

    def expand(self) -> dict[str, Any]:
        """Expand this worker's states of the current layer; what to send to each worker."""
        system, codec, step = self.system, self.codec, self.step
        rows: list[tuple] = []
        dest: list[np.ndarray] = []
        degrees: list[int] = []
        finished: list[int] = []
        violation: tuple | None = None
        gids = self.gid.view()[self.layer_lo : self.layer_hi].tolist()
        look = 4096
        for local, g in zip(range(self.layer_lo, self.layer_hi), gids, strict=True):
            pkey = self._key(local)
            w = codec.world(pkey)
            if step is not None:
                step.context(w.m, codec.local_ids(pkey))
            moves = list(system.moves(w, cpu_step=step))
            degrees.append(len(moves))
            if self.liveness and not moves and system.finished(w):
                finished.append(g)
            for i, mv in enumerate(moves):
                if mv.log.violations:
                    bad = [v for v in mv.log.violations if v.prop in self.safety]
                    if bad:
                        violation = (g << MOVE_BITS | i, bad[0].prop, bad[0].text, mv.actor, mv.choice)
                        break
                key = codec.key_after(w, pkey, mv.world)
                rows.append((g, i, self._actor(mv.actor), mv.choice, key))
            if violation is not None:
                break  # later transitions of this layer cannot matter any more
            if len(rows) > look:
                look = len(rows) + 4096
                if self.memory_mib is not None and rss_mib() > self.memory_mib:
                    return {"stopped": f"at {self.memory_mib:,.0f} MiB of memory in worker {self.index}"}
        if max(degrees, default=0) >= (1 << MOVE_BITS) - 1:
            raise OverflowError("a state with more than 65,535 moves")
        cand = np.zeros(len(rows), CANDIDATE)
        if rows:
            cand["src"] = [r[0] for r in rows]
            cand["move"] = [r[1] for r in rows]
            cand["actor"] = [r[2] for r in rows]
            cand["choice"] = [r[3] for r in rows]
            ids = np.array([r[4] for r in rows], np.int64)
            for k in range(KEY_WIDTH):
                cand["parts"][:, k] = self._addresses(k, int(ids[:, k].max()))[ids[:, k]]
            dest = owners(cand["parts"], self.workers)
        out: list[dict[str, Any]] = []
        for q in range(self.workers):
            mine = cand[dest == q] if rows else cand
            ship: list[tuple[int, int, Any]] = []
            sent = self.sent[q]
            if len(mine):
                for k in range(KEY_WIDTH):
                    table = self._tables()[k]
                    for a in np.unique(mine["parts"][:, k]).tolist():
                        if (k, a) not in sent:
                            sent.add((k, a))
                            ship.append((k, a, table.values[self.local[k][a]]))
            out.append({"cand": mine, "ship": ship, "actors": list(self.actor_names)})
        return {
            "out": out,
            "degrees": np.array(degrees, np.int64),
            "gids": np.array(gids[: len(degrees)], np.int64),
            "finished": finished,
            "violation": violation,
            "memory": rss_mib(),
        }

    # -- phase 2 -------------------------------------------------------------------------------
    def absorb(self, inbox: list[dict[str, Any]], pending: list[str]) -> dict[str, Any]:
        """Keep the new states among what the workers sent; their keys, violations and cases."""
        for msg in inbox:
            for kind, address, value in msg["ship"]:
                if address not in self.local[kind]:
                    self._learn(kind, address, value)
        parts = [m["cand"] for m in inbox]
        codes = []
        for m in inbox:
            table = np.array([self._actor(n) for n in m["actors"]] or [0], np.uint16)
            codes.append(table[m["cand"]["actor"]] if len(m["cand"]) else m["cand"]["actor"])
        cand = np.concatenate(parts) if parts else np.zeros(0, CANDIDATE)
        actor = np.concatenate(codes) if codes else np.zeros(0, np.uint16)
        order = np.lexsort((cand["move"], cand["src"]))
        cand, actor = cand[order], actor[order]
        keys = np.zeros((len(cand), KEY_WIDTH), np.uint32)
        for k in range(KEY_WIDTH):
            uniq, inv = np.unique(cand["parts"][:, k], return_inverse=True)
            local = np.array([self.local[k][a] for a in uniq.tolist()], np.uint32)
            keys[:, k] = local[inv.reshape(-1)] if len(uniq) else 0
        before = len(self.visited)
        ids, new = self.visited.add(keys)
        first = np.flatnonzero(new)
        minkeys = cand["src"][first] << MOVE_BITS | cand["move"][first].astype(np.int64)
        self.parent.append(cand["src"][first])
        self.actor.append(actor[first])
        self.choice.append(cand["choice"][first])
        if self.fingerprint:
            self.next_keys = keys[first]
        violation = None
        reached: dict[str, tuple[int, str, int]] = {}  # case -> (key, actor, choice)
        cases = {c: self.cases[c] for c in pending}
        for j, i in enumerate(first.tolist()):
            w = self.codec.world(tuple(keys[i].tolist()))
            log = NullLog()
            self.system.check(w, log)
            bad = [v for v in log.violations if v.prop in self.safety]
            step = (self.actor_names[actor[i]], int(cand["choice"][i]))
            if bad and violation is None:
                violation = (int(minkeys[j]), bad[0].prop, bad[0].text, *step)
            for case, holds in list(cases.items()):
                if holds(self.system, w):
                    reached[case] = (int(minkeys[j]), *step)
                    del cases[case]
        self.pending_new = np.arange(before, before + len(first))
        if self.liveness:
            self.pending_edges = (cand["src"], ids)
        return {"minkeys": minkeys, "violation": violation, "reached": reached, "memory": rss_mib()}

    # -- phase 3 -------------------------------------------------------------------------------
    def assign(self, gids: np.ndarray) -> None:
        """The global numbers of the states absorbed last (in their local order)."""
        self.gid.append(gids)
        if self.liveness and self.pending_edges is not None:
            src, ids = self.pending_edges
            self.edges_src.append(src)
            self.edges_tgt.append(self.gid.view()[ids])
            self.pending_edges = None
        assert self.pending_new is not None
        self.layer_lo = int(self.pending_new[0]) if len(self.pending_new) else len(self.visited)
        self.layer_hi = len(self.visited)
        if self.fingerprint:
            self.layer_keys = self.next_keys

    # -- questions -----------------------------------------------------------------------------
    def _local(self, gid: int) -> int | None:
        gids = self.gid.view()
        at = int(np.searchsorted(gids, gid))
        return at if at < len(gids) and gids[at] == gid else None

    def tree_entry(self, gid: int) -> tuple[int, str, int] | None:
        """(BFS parent, actor, choice) of state ``gid`` if this worker owns it."""
        at = self._local(gid)
        if at is None:
            return None
        return int(self.parent[at]), self.actor_names[int(self.actor[at])], int(self.choice[at])

    def world_of(self, gid: int) -> World | None:
        at = self._local(gid)
        if at is None or self.fingerprint:
            return None
        return self.codec.world(tuple(self.visited.keys[at].tolist()))

    def graph(self) -> dict[str, np.ndarray]:
        return {"src": self.edges_src.view(), "tgt": self.edges_tgt.view()}

    def stats(self) -> dict[str, Any]:
        return {
            "states": len(self.visited),
            "visited_bytes": self.visited.nbytes,
            "parts": self.codec.part_counts(),
            "memo": self.step.stats() if self.step is not None else None,
            "memory": rss_mib(),
            "cpu_seconds": time.process_time(),
        }
