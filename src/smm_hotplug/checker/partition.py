"""One worker's share of a search on several processes: the states it owns, and its phases.

A state belongs to the worker its content address says (``owner``: the parts' 64-bit content
addresses, ``checker.content``, mixed and taken modulo the number of workers), so every copy of
a state found anywhere goes to the same worker, which alone keeps it.  Each BFS layer runs in
three phases, driven by ``checker.parallel``:

* ``expand``: the worker computes every move of each state of the layer it owns, in the order
  of their global numbers, and sends each successor to its owner as (parent number, move
  index, actor, choice, content addresses of its three parts) — the parts' values only the first
  time that receiver needs them.  A move that violates a deciding property is not sent: its
  (parent, move) key is reported instead; so is the first move of the layer that violates each
  property accepted as denial of service (a finding), which is sent like any other.
* ``absorb``: the owner sorts what it received by (parent number, move index) — the order in
  which a one-process BFS meets those transitions — drops states it already has, and keeps the
  new ones with the first transition that reached each as their BFS parent; it checks their
  state invariants (violations and findings, keyed by that first transition) and hard cases,
  and reports their keys.
* ``assign``: the driver ranks all workers' new keys into global numbers — exactly the numbers
  the one-process search gives those states — and tells each worker those of its own.

Where ``hotplug-completes`` is judged or accepted, each owner keeps the transitions into its
states (source, move index, target) and reports the states without moves where the scenario is
complete; the driver puts them together once the space is explored (``tree`` and ``graph``).
"""

from __future__ import annotations

import pickle
import time
from typing import Any

import numpy as np

from smm_hotplug.checker.content import Addresses, owners
from smm_hotplug.checker.judge import Judge
from smm_hotplug.checker.limits import rss_mib
from smm_hotplug.checker.memo import StepMemo
from smm_hotplug.checker.store import KEY_WIDTH, Codec, Column, Visited, fingerprint_spacing_probability
from smm_hotplug.hw.memory import Memory, Page, canonical_page, page_from_canonical
from smm_hotplug.hw.trace import NullLog
from smm_hotplug.world import System

MOVE_BITS = 16  # a key is parent number << MOVE_BITS | move index
PACK_ROWS = 1 << 16  # successors kept as tuples before they are packed into an array
CANDIDATE = np.dtype(
    [("src", "<i8"), ("move", "<u2"), ("actor", "<u2"), ("choice", "<i4"), ("parts", "<u8", (KEY_WIDTH,))]
)


class Partition:
    """The states one worker owns (see the module note); also usable as a Dask actor."""

    def __init__(
        self,
        system_blob: bytes,
        judged: tuple[str, ...],
        accepted: tuple[str, ...],
        cases: dict[str, Any],
        goal: str | None,
        index: int,
        workers: int,
        fingerprint: bool,
        memo: bool,
        memory_mib: float | None,
    ) -> None:
        self.system: System = pickle.loads(system_blob)
        self.judge = Judge(self.system, judged, accepted)  # which property decides, which is watched
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
        self.addresses = Addresses()
        self.address: list[list[int]] = [[] for _ in range(KEY_WIDTH)]
        self.local: list[dict[int, int]] = [{} for _ in range(KEY_WIDTH)]
        self._address_arrays = [np.zeros(0, np.uint64) for _ in range(KEY_WIDTH)]
        self.sent: list[set[tuple[int, int]]] = [set() for _ in range(workers)]  # (kind, address)
        # RAM travels page by page: the pages each receiver was sent, the pages received.
        self.sent_pages: list[set[int]] = [set() for _ in range(workers)]
        self.page_store: dict[int, Page] = {}
        self.layer_lo = 0
        self.layer_hi = 0
        self.layer_keys: np.ndarray | None = None  # fingerprint mode: the layer's part ids
        self.pending_new: np.ndarray | None = None
        self.pending_edges: tuple[np.ndarray, np.ndarray] | None = None
        self.edges_src = Column(np.int64)
        self.edges_move = Column(np.uint16)
        self.edges_tgt = Column(np.int64)
        self.next_keys: np.ndarray | None = None

    # -- parts ---------------------------------------------------------------------------------
    def _tables(self) -> tuple[Any, Any, Any]:
        c = self.codec
        return c.cpus, c.mem, c.rest

    def _content_address(self, kind: int, value: Any) -> int:
        if kind == 1:
            return self.addresses.memory(value)
        return self.addresses.pieces(b"CR"[kind // 2 : kind // 2 + 1], value)

    def _address(self, kind: int, pid: int) -> int:
        known = self.address[kind]
        while len(known) <= pid:
            table = self._tables()[kind]
            value = table.values[len(known)]
            a = self._content_address(kind, value)
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
            more = np.array(self.address[kind][len(have) :], np.uint64)  # only the new ones
            have = self._address_arrays[kind] = np.concatenate([have, more])
        return have

    def _learn(self, kind: int, address: int, value: Any) -> int:
        table = self._tables()[kind]
        pid = table.id(value)
        self._address(kind, pid)  # records the address of every part up to pid
        if self.address[kind][pid] != address:
            raise RuntimeError(f"part sent with content address {address:#x} has another one here")
        return pid

    def _ship_memory(self, mem: Memory, q: int, pages: list[tuple[int, tuple]]) -> tuple:
        """A RAM image for worker ``q``: its page addresses and objects; the pages ``q`` was not
        sent before go into ``pages``."""
        form, objs = self.addresses.memory_form(mem)
        sent = self.sent_pages[q]
        mine = dict(mem.pages())
        for pno, a in form:
            if a not in sent:
                sent.add(a)
                pages.append((a, canonical_page(mine[pno])))
        return form, objs

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

    def expand(self, seconds_left: float | None = None) -> dict[str, Any]:
        """Expand this worker's states of the current layer; what to send to each worker, the
        first move that violates a deciding property and the first that violates each accepted
        one (key, property, detail, actor, choice, place among the move's violations)."""
        system, codec, step, judge = self.system, self.codec, self.step, self.judge
        rows: list[tuple] = []  # the successors not yet packed into ``chunks``
        chunks: list[np.ndarray] = []
        sent_rows = 0
        degrees: list[int] = []
        finished: list[int] = []
        violation: tuple | None = None
        findings: dict[str, tuple] = {}
        gids = self.gid.view()[self.layer_lo : self.layer_hi].tolist()
        look = 4096
        deadline = None if seconds_left is None else time.monotonic() + seconds_left
        for local, g in zip(range(self.layer_lo, self.layer_hi), gids, strict=True):
            pkey = self._key(local)
            w = codec.world(pkey)
            if step is not None:
                step.context(w.m, codec.local_ids(pkey))
            moves = list(system.moves(w, cpu_step=step))
            degrees.append(len(moves))
            if judge.edges_kept and not moves and system.finished(w):
                finished.append(g)
            for i, mv in enumerate(moves):
                violations = mv.log.violations
                if violations:
                    bad = judge.deciding(violations)
                    if bad is not None:
                        violation = (g << MOVE_BITS | i, bad.prop, bad.text, mv.actor, mv.choice)
                        break
                    for pos, v in enumerate(violations):
                        if v.prop in judge.watched and v.prop not in findings:
                            findings[v.prop] = (g << MOVE_BITS | i, v.prop, v.text, mv.actor, mv.choice, pos)
                key = codec.key_after(w, pkey, mv.world)
                rows.append((g, i, self._actor(mv.actor), mv.choice, key))
            if violation is not None:
                break  # later transitions of this layer cannot matter any more
            if len(rows) >= PACK_ROWS:  # a large layer's successors as tuples would take GBs
                chunks.append(self._candidates(rows))
                sent_rows += len(rows)
                rows = []
            if sent_rows + len(rows) > look:
                look = sent_rows + len(rows) + 4096
                if self.memory_mib is not None and rss_mib() > self.memory_mib:
                    return {"stopped": f"at {self.memory_mib:,.0f} MiB of memory in worker {self.index}"}
                if deadline is not None and time.monotonic() > deadline:
                    return {"stopped": "time"}
        if max(degrees, default=0) >= (1 << MOVE_BITS) - 1:
            raise OverflowError("a state with more than 65,535 moves")
        chunks.append(self._candidates(rows))
        cand = np.concatenate(chunks)
        dest = owners(cand["parts"], self.workers) if len(cand) else np.zeros(0, np.int64)
        # Each receiver's share as bytes: the driver routes it without unpacking it.
        out: list[bytes] = []
        for q in range(self.workers):
            mine = cand[dest == q]
            ship: list[tuple[int, int, Any]] = []
            pages: list[tuple[int, tuple]] = []
            sent = self.sent[q]
            if len(mine) and q != self.index:  # its own parts a worker has
                for k in range(KEY_WIDTH):
                    table = self._tables()[k]
                    for a in np.unique(mine["parts"][:, k]).tolist():
                        if (k, a) not in sent:
                            sent.add((k, a))
                            value = table.values[self.local[k][a]]
                            if k == 1:
                                value = self._ship_memory(value, q, pages)
                            ship.append((k, a, value))
            msg = {"cand": mine, "ship": ship, "pages": pages, "actors": list(self.actor_names)}
            out.append(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        return {
            "out": out,
            "degrees": np.array(degrees, np.int64),
            "gids": np.array(gids[: len(degrees)], np.int64),
            "finished": finished,
            "violation": violation,
            "findings": list(findings.values()),
            "memory": rss_mib(),
        }

    def _candidates(self, rows: list[tuple]) -> np.ndarray:
        """Successors (parent number, move index, actor code, choice, part ids) packed as they
        travel: the part ids turned into content addresses."""
        cand = np.zeros(len(rows), CANDIDATE)
        if rows:
            cand["src"] = [r[0] for r in rows]
            cand["move"] = [r[1] for r in rows]
            cand["actor"] = [r[2] for r in rows]
            cand["choice"] = [r[3] for r in rows]
            ids = np.array([r[4] for r in rows], np.int64)
            for k in range(KEY_WIDTH):
                cand["parts"][:, k] = self._addresses(k, int(ids[:, k].max()))[ids[:, k]]
        return cand

    # -- phase 2 -------------------------------------------------------------------------------
    def absorb(self, packed: list[bytes], pending: list[str]) -> dict[str, Any]:
        """Keep the new states among what the workers sent; their keys, violations and cases."""
        inbox: list[dict[str, Any]] = [pickle.loads(b) for b in packed]
        for msg in inbox:
            for address, canonical in msg["pages"]:
                if address not in self.page_store:
                    page = self.page_store[address] = page_from_canonical(*canonical)
                    if self.addresses.page(page) != address:
                        raise RuntimeError(f"page sent with address {address:#x} has another one here")
            for kind, address, value in msg["ship"]:
                if address not in self.local[kind]:
                    if kind == 1:
                        form, objs = value
                        value = Memory.from_pages({pno: self.page_store[a] for pno, a in form}, dict(objs))
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
        findings: dict[str, tuple] = {}
        reached: dict[str, tuple[int, str, int]] = {}  # case -> (key, actor, choice)
        cases = {c: self.cases[c] for c in pending}
        judge = self.judge
        for j, i in enumerate(first.tolist()):
            w = self.codec.world(tuple(keys[i].tolist()))
            log = NullLog()
            self.system.check(w, log)
            step = (self.actor_names[actor[i]], int(cand["choice"][i]))
            if log.violations:
                bad = judge.deciding(log.violations)
                if bad is not None and violation is None:
                    violation = (int(minkeys[j]), bad.prop, bad.text, *step)
                for pos, v in enumerate(log.violations):
                    if v.prop in judge.watched and v.prop not in findings:
                        findings[v.prop] = (int(minkeys[j]), v.prop, v.text, *step, pos)
            for case, holds in list(cases.items()):
                if holds(self.system, w):
                    reached[case] = (int(minkeys[j]), *step)
                    del cases[case]
        self.pending_new = np.arange(before, before + len(first))
        if judge.edges_kept:
            self.pending_edges = (cand["src"], cand["move"], ids)
        return {
            "minkeys": minkeys,
            "violation": violation,
            "findings": list(findings.values()),
            "reached": reached,
            "memory": rss_mib(),
        }

    # -- phase 3 -------------------------------------------------------------------------------
    def assign(self, gids: np.ndarray) -> None:
        """The global numbers of the states absorbed last (in their local order)."""
        self.gid.append(gids)
        if self.pending_edges is not None:
            src, move, ids = self.pending_edges
            self.edges_src.append(src)
            self.edges_move.append(move)
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

    def tree(self) -> dict[str, Any]:
        """This worker's part of the BFS tree: global numbers, parents, actors, choices."""
        return {
            "gid": self.gid.view(),
            "parent": self.parent.view(),
            "actor": self.actor.view(),
            "choice": self.choice.view(),
            "actor_names": list(self.actor_names),
        }

    def graph(self) -> dict[str, np.ndarray]:
        """The transitions into this worker's states: (source, move index, target), global."""
        return {"src": self.edges_src.view(), "move": self.edges_move.view(), "tgt": self.edges_tgt.view()}

    def stats(self) -> dict[str, Any]:
        spacing = fingerprint_spacing_probability(self.visited.keys.view()) if self.fingerprint else None
        return {
            "fingerprint_spacing_probability": spacing,  # fingerprints of one worker never meet another's
            "states": len(self.visited),
            "visited_bytes": self.visited.nbytes,
            "parts": self.codec.part_counts(),
            "memo": self.step.stats() if self.step is not None else None,
            "memory": rss_mib(),
            "cpu_seconds": time.process_time(),
        }
