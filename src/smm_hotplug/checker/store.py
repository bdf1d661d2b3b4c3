"""Compact storage of the explored states: part tables, packed state keys and the visited set.

SPIN's *collapse compression* in two levels.  A world is cut into parts (the CPUs, RAM, and
everything else: chipset, devices, management's progress, adversary budgets); each distinct
part value gets a small integer id in a ``PartTable`` (hash-consing: one object per value, shared
by every state that holds it), and a state is kept as the short tuple of its part ids — three
32-bit words — in flat numpy arrays.  ``Codec`` converts both ways, so a frontier state is
rebuilt from its ids when it is expanded and no ``World`` object is kept per state.

``Visited`` is the set of keys seen so far, an open-addressing hash table of 32-bit state numbers
over the key array, probed a whole batch at a time with numpy.  In exact mode the keys are the
part ids (12 bytes a state, plus 4-8 bytes of table); in fingerprint mode (TLC's default) only a
64-bit hash of them is kept (8 bytes plus table), and two different states with the same
fingerprint would be merged — ``collision_probability`` says how likely that was, computed as
TLC computes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from smm_hotplug.hw.state import Machine
from smm_hotplug.world import World

KEY_WIDTH = 3  # part ids per state: CPUs, RAM, the rest
_W = 8  # slots of a probe run looked at per round
_SLICE = 1 << 14  # keys probed together
_STEPS = np.arange(_W)
MAX_STATES = 2**32 - 2  # state numbers are stored as uint32 (+1, 0 = empty slot)
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class PartTable:
    """Distinct values of one kind of part, each with a dense id (its index)."""

    __slots__ = ("_ids", "_same", "values")

    def __init__(self) -> None:
        self._ids: dict[Any, int] = {}
        self._same: dict[int, tuple[Any, int]] = {}  # id(pooled object) -> (object, part id)
        self.values: list[Any] = []

    def id(self, value: Any) -> int:
        """The id of ``value`` (added when new).  The pooled object itself is found by identity,
        without hashing it (tuples do not keep their hash)."""
        hit = self._same.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        pid = self._ids.get(value)
        if pid is None:
            pid = self._ids[value] = len(self.values)
            self.values.append(value)
            self._same[id(value)] = (value, pid)
        return pid

    def __len__(self) -> int:
        return len(self.values)


class TupleTable:
    """Distinct tuples of parts, keyed by the tuple of the parts' ids (cheap to hash); each kept
    as a tuple of the pooled parts."""

    __slots__ = ("_ids", "piece_ids", "pieces", "values")

    def __init__(self, pieces: PartTable) -> None:
        self._ids: dict[tuple[int, ...], int] = {}
        self.pieces = pieces
        self.values: list[tuple] = []
        self.piece_ids: list[tuple[int, ...]] = []

    def id(self, parts: tuple | list) -> int:
        pieces = self.pieces
        return self._id_of(tuple([pieces.id(p) for p in parts]))

    def _id_of(self, ids: tuple[int, ...]) -> int:
        tid = self._ids.get(ids)
        if tid is None:
            tid = self._ids[ids] = len(self.values)
            self.values.append(tuple([self.pieces.values[i] for i in ids]))
            self.piece_ids.append(ids)
        return tid

    def id_after(self, tid: int, parts: tuple | list) -> int:
        """The id of ``parts``, most of which are the very objects of tuple ``tid``."""
        old = self.values[tid]
        ids: list[int] | None = None
        for j, p in enumerate(parts):
            if p is not old[j]:
                if ids is None:
                    ids = list(self.piece_ids[tid])
                ids[j] = self.pieces.id(p)
        return tid if ids is None else self._id_of(tuple(ids))

    def __len__(self) -> int:
        return len(self.values)


class Codec:
    """World <-> key (CPUs id, RAM id, rest id), with every part hash-consed."""

    def __init__(self) -> None:
        fields = Machine._fields
        self._cpus_at = fields.index("cpus")
        self._mem_at = fields.index("mem")
        self._rest_at = [i for i in range(len(fields)) if i not in (self._cpus_at, self._mem_at)]
        self._n_machine = len(fields)
        runs: list[list[int]] = []
        for i in self._rest_at:
            if runs and runs[-1][1] == i:
                runs[-1][1] = i + 1
            else:
                runs.append([i, i + 1])
        self._rest_runs = [(a, b) for a, b in runs]
        self._cpu = PartTable()  # single CPUs
        self._piece = PartTable()  # devices, budgets, ...: the pieces of the rest
        self.cpus = TupleTable(self._cpu)
        self.mem = PartTable()
        self.rest = TupleTable(self._piece)

    def _rest(self, w: World) -> list:
        m = w.m
        return [m[i] for i in self._rest_at] + list(w[1:])

    def key(self, w: World) -> tuple[int, int, int]:
        m = w.m
        return (self.cpus.id(m[self._cpus_at]), self.mem.id(m[self._mem_at]), self.rest.id(self._rest(w)))

    def key_after(self, parent: World, pkey: tuple[int, int, int], w: World) -> tuple[int, int, int]:
        """``key(w)`` for a successor ``w`` of ``parent`` (whose key is ``pkey``): a move changes
        few parts, and a part that is the parent's own object keeps the parent's id."""
        m, pm = w.m, parent.m
        at = self._cpus_at
        cpus = pkey[0] if m[at] is pm[at] else self.cpus.id_after(pkey[0], m[at])
        at = self._mem_at
        mem = pkey[1] if m[at] is pm[at] else self.mem.id(m[at])
        for a, b in self._rest_runs:  # most moves leave the rest alone: compare runs at C speed
            if m[a:b] != pm[a:b]:
                break
        else:
            if w[1:] == parent[1:]:
                return (cpus, mem, pkey[2])
        return (cpus, mem, self.rest.id_after(pkey[2], self._rest(w)))

    def local_ids(self, key: tuple[int, int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Ids naming a state's parts for memo keys: (id of each CPU, ids of RAM and of the
        machine's other parts)."""
        nm = len(self._rest_at)
        return self.cpus.piece_ids[key[0]], (key[1], *self.rest.piece_ids[key[2]][:nm])

    def world(self, key: tuple[int, int, int] | np.ndarray) -> World:
        rest = self.rest.values[int(key[2])]
        parts: list[Any] = [None] * self._n_machine
        parts[self._cpus_at] = self.cpus.values[int(key[0])]
        parts[self._mem_at] = self.mem.values[int(key[1])]
        nm = len(self._rest_at)
        for i, at in enumerate(self._rest_at):
            parts[at] = rest[i]
        return World(Machine._make(parts), *rest[nm:])

    def part_counts(self) -> dict[str, int]:
        return {"cpus": len(self.cpus), "cpu": len(self._cpu), "mem": len(self.mem), "rest": len(self.rest)}


# -- growable numpy columns ---------------------------------------------------------------------
class Column:
    """An append-only numpy array that grows in place (realloc: no copy of what it holds)."""

    __slots__ = ("_a", "n")

    def __init__(self, dtype: Any, width: int | None = None, capacity: int = 1024) -> None:
        shape = (capacity,) if width is None else (capacity, width)
        self._a = np.zeros(shape, dtype)
        self.n = 0

    def _reserve(self, more: int) -> None:
        need = self.n + more
        cap = self._a.shape[0]
        if need > cap:
            new = max(need, cap + cap // 2, 1024)
            self._a.resize((new, *self._a.shape[1:]), refcheck=False)

    def append(self, values: np.ndarray | list) -> None:
        k = len(values)
        if k:
            self._reserve(k)
            self._a[self.n : self.n + k] = values
            self.n += k

    def push(self, value: Any) -> None:
        self._reserve(1)
        self._a[self.n] = value
        self.n += 1

    def view(self) -> np.ndarray:
        """The filled part (valid until the next append)."""
        return self._a[: self.n]

    def __getitem__(self, i: Any) -> Any:
        return self._a[: self.n][i]

    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        return self._a.nbytes


# -- hashing --------------------------------------------------------------------------------------
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))


def _finalize(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit affects every output bit."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def hash_keys(keys: np.ndarray) -> np.ndarray:
    """64-bit hashes of (n, KEY_WIDTH) uint32 keys (never 0: 0 marks nothing)."""
    with np.errstate(over="ignore"):
        k = keys.astype(np.uint64)
        h = np.zeros(len(keys), np.uint64)
        for j in range(keys.shape[1]):
            h = _finalize(h ^ (k[:, j] * _MIX[j % 3]) ^ np.uint64(j + 1))
    h[h == 0] = 1
    return h


def collision_probability(states: int, transitions: int) -> float:
    """TLC's estimate that fingerprinting merged two different states, its "calculated
    (optimistic)" figure (tlc2.tool.ModelChecker.reportSuccess): d * (g - d) / 2^64 for d distinct
    states among g generated ones (here: the initial state and every transition's target)."""
    generated = transitions + 1
    return states * max(generated - states, 0) / 2.0**64


def fingerprint_spacing_probability(fingerprints: np.ndarray) -> float | None:
    """TLC's second estimate, "based on the actual fingerprints" (FPSet.checkFPs): the largest
    1 / |fi - fj| over fingerprints adjacent in sorted order."""
    if len(fingerprints) < 2:
        return None
    fps = np.sort(fingerprints)
    gap = int(np.diff(fps).min())
    return 1.0 / gap if gap else 1.0


# -- the visited set ------------------------------------------------------------------------------
class Visited:
    """Keys seen so far -> their state numbers (0, 1, ... in the order they were added)."""

    LOAD = 0.8  # grow (by half) beyond this share of used slots
    GROW = 1.5

    def __init__(self, fingerprint: bool = False, capacity: int = 1 << 12) -> None:
        self.fingerprint = fingerprint
        self.keys = Column(np.uint64) if fingerprint else Column(np.uint32, KEY_WIDTH)
        self._table = np.zeros(capacity, np.uint32)  # state number + 1; 0: empty

    def __len__(self) -> int:
        return self.keys.n

    @property
    def nbytes(self) -> int:
        """Bytes the set takes now (keys and table, not counting unused reserve)."""
        per_key = 8 if self.fingerprint else 4 * KEY_WIDTH
        return self.keys.n * per_key + self._table.nbytes

    def key_at(self, state: int) -> np.ndarray:
        if self.fingerprint:
            raise ValueError("fingerprint mode keeps no keys")
        return self.keys[state]

    def _home(self, h: np.ndarray) -> np.ndarray:
        cap = np.uint64(len(self._table))
        return ((h >> np.uint64(32)) * cap >> np.uint64(32)).astype(np.int64)

    def _same(self, cand: np.ndarray, probe: np.ndarray, h: np.ndarray) -> np.ndarray:
        if self.fingerprint:
            return self.keys.view()[cand] == h
        have = self.keys.view()[cand]
        same = have[:, 0] == probe[:, 0]
        for j in range(1, KEY_WIDTH):
            same &= have[:, j] == probe[:, j]
        return same

    def add(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """State numbers of a batch of (n, KEY_WIDTH) keys, adding those not seen before in the
        order of their first occurrence; and which entries of the batch were first seen here."""
        n = len(keys)
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0, bool)
        hk = hash_keys(keys)
        hu, first, inverse = np.unique(hk, return_index=True, return_inverse=True)
        uniq = keys[first]
        if len(hu) < n and not (uniq[inverse] == keys).all():
            # Two different keys with one 64-bit hash in a batch: sort the keys themselves.
            uniq, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            hu = hash_keys(uniq)
        inverse = inverse.reshape(-1)
        h = hu
        found = self._find(uniq, h)
        missing = np.flatnonzero(found < 0)
        if missing.size:
            # New states get numbers in the order of their first occurrence in the batch.
            missing = missing[np.argsort(first[missing], kind="stable")]
            start = self.keys.n
            if start + missing.size > MAX_STATES:
                raise OverflowError("more than 2^32 states in one process: use --workers")
            found[missing] = np.arange(start, start + missing.size)
            self.keys.append(h[missing] if self.fingerprint else uniq[missing])
            if not self._grow_for(self.keys.n):
                self._insert(h[missing], found[missing])
        new = np.zeros(n, bool)
        new[first[missing]] = True
        return found[inverse], new

    def _window(self, pos: np.ndarray) -> np.ndarray:
        win = pos[:, None] + _STEPS
        cap = len(self._table)
        if cap < _W:
            return win % cap
        win[win >= cap] -= cap
        return win

    def _find(self, probe: np.ndarray, h: np.ndarray) -> np.ndarray:
        """State numbers of the (distinct) keys ``probe`` with hashes ``h``; -1 where absent."""
        if len(probe) <= _SLICE:
            return self._find_some(probe, h)
        return np.concatenate(
            [self._find_some(probe[i : i + _SLICE], h[i : i + _SLICE]) for i in range(0, len(probe), _SLICE)]
        )

    def _find_some(self, probe: np.ndarray, h: np.ndarray) -> np.ndarray:
        """Linear probing, ``_W`` slots of every key's run at a time: a run ends at its key or
        at the first empty slot."""
        out = np.full(len(probe), -1, np.int64)
        table = self._table
        idx = np.arange(len(probe))
        pos = self._home(h)
        while idx.size:
            win = self._window(pos)
            slots = table[win]
            empty = slots == 0
            stop = np.where(empty.any(axis=1), empty.argmax(axis=1), _W)  # first empty slot
            check = ~empty & (stop[:, None] > _STEPS)
            rows, cols = np.nonzero(check)
            cand = slots[rows, cols].astype(np.int64) - 1
            same = self._same(cand, probe[idx[rows]], h[idx[rows]])
            hit = np.zeros(slots.shape, bool)
            hit[rows[same], cols[same]] = True
            found = hit.any(axis=1)
            out[idx[found]] = slots[found, hit[found].argmax(axis=1)].astype(np.int64) - 1
            go_on = ~found & (stop == _W)
            idx = idx[go_on]
            pos = win[go_on, -1] + 1
            pos[pos >= len(table)] = 0
        return out

    def _insert(self, h: np.ndarray, ids: np.ndarray) -> None:
        for i in range(0, len(h), _SLICE):
            self._insert_some(h[i : i + _SLICE], ids[i : i + _SLICE])

    def _insert_some(self, h: np.ndarray, ids: np.ndarray) -> None:
        """Put new (absent, distinct) keys' numbers in the first free slot of their runs."""
        table = self._table
        pos = self._home(h)
        vals = (ids + 1).astype(np.uint32)
        while pos.size:
            win = self._window(pos)
            empty = table[win] == 0
            has = empty.any(axis=1)
            first = np.where(has, empty.argmax(axis=1), _W - 1)
            target = win[np.arange(len(pos)), first]
            # Several may want the same free slot: one of them gets it, the others retry.
            cand = np.flatnonzero(has)
            table[target[cand]] = vals[cand]
            rest = table[target] != vals
            pos = np.where(has, target, target + 1)[rest]
            pos[pos >= len(table)] = 0
            vals = vals[rest]

    def _grow_for(self, count: int) -> bool:
        """Make room for ``count`` states; True when the table was rebuilt (with every key)."""
        cap = len(self._table)
        if count <= self.LOAD * cap:
            return False
        while count > self.LOAD * cap:
            cap = int(cap * self.GROW) + 1
        self._table = np.zeros(cap, np.uint32)
        n_old = count  # rehash everything added so far, in chunks
        keys = self.keys.view()
        step = 1 << 20
        for lo in range(0, n_old, step):
            part = keys[lo : lo + step]
            h = part if self.fingerprint else hash_keys(part)
            self._insert(h, np.arange(lo, lo + len(part)))
        return True
