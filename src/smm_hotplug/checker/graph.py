"""The explored state graph, kept in flat numpy arrays (a few bytes per state and per transition).

States are numbered in breadth-first order.  Each state but the first remembers the move that
first reached it (its BFS parent, the actor and the actor's choice), so the schedule to any
state is a walk up that tree and is a shortest one.  Where ``expanded`` is called the graph also
keeps every transition, as one array of targets cut into runs by state (compressed sparse rows;
each state's successors in the order of its moves), for the ``hotplug-completes`` analysis once
the space is explored: which states can still reach a finished one (``can_finish``), and where
a run that cannot ends up for ever (``stuck_end``: a bottom strongly connected component of the
rest — one state without moves, or a cycle).
"""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np

from smm_hotplug.checker.store import Column

NO_PARENT = np.uint32(0xFFFFFFFF)


class StateGraph:
    def __init__(self) -> None:
        self._parent = Column(np.uint32)
        self._actor = Column(np.uint16)
        self._choice = Column(np.int32)
        self._parent.push(NO_PARENT)
        self._actor.push(0)
        self._choice.push(0)
        self._actor_code: dict[str, int] = {"": 0}
        self._actor_name: list[str] = [""]
        self._targets = Column(np.uint32)
        self._degree = Column(np.uint32)  # successors of each expanded state, in state order
        self.layer_starts: list[int] = [0]  # first state of each BFS layer (when known)

    @classmethod
    def from_arrays(
        cls,
        parent: np.ndarray,
        actor: np.ndarray,
        choice: np.ndarray,
        actor_names: list[str],
        degree: np.ndarray,
        targets: np.ndarray,
        layer_starts: list[int],
    ) -> StateGraph:
        """A graph put together from the pieces a search on several processes kept: the tree
        (parent -1 or NO_PARENT for the initial state, actors as indices into ``actor_names``)
        and the transitions as compressed rows."""
        g = cls()
        g._parent = Column(np.uint32, capacity=max(len(parent), 1))
        g._parent.append(np.where(parent < 0, NO_PARENT, parent).astype(np.uint32))
        g._actor = Column(np.uint16, capacity=max(len(actor), 1))
        g._actor.append(actor)
        g._choice = Column(np.int32, capacity=max(len(choice), 1))
        g._choice.append(choice)
        g._actor_name = list(actor_names)
        g._actor_code = {name: i for i, name in enumerate(actor_names)}
        g._degree = Column(np.uint32, capacity=max(len(degree), 1))
        g._degree.append(degree)
        g._targets = Column(np.uint32, capacity=max(len(targets), 1))
        g._targets.append(targets)
        g.layer_starts = list(layer_starts)
        return g

    # -- the BFS tree --------------------------------------------------------------------------
    def actor_code(self, actor: str) -> int:
        code = self._actor_code.get(actor)
        if code is None:
            code = self._actor_code[actor] = len(self._actor_name)
            self._actor_name.append(actor)
        return code

    def add(self, parent: int, actor: str, choice: int) -> None:
        """The next state, first reached from ``parent`` by ``actor``'s ``choice``."""
        self._parent.push(parent)
        self._actor.push(self.actor_code(actor))
        self._choice.push(choice)

    def add_many(self, parents: np.ndarray, actors: np.ndarray, choices: np.ndarray) -> None:
        """Several next states at once (actors as codes of ``actor_code``)."""
        self._parent.append(parents)
        self._actor.append(actors)
        self._choice.append(choices)

    def __len__(self) -> int:
        return self._parent.n

    def path_to(self, state: int) -> list[tuple[str, int]]:
        """The schedule (actor, choice) from the initial state to ``state``."""
        out = []
        parent, actor, choice = self._parent.view(), self._actor.view(), self._choice.view()
        while state > 0:
            out.append((self._actor_name[actor[state]], int(choice[state])))
            state = int(parent[state])
        return out[::-1]

    def states_to(self, state: int) -> list[int]:
        """The states of the BFS-tree path from the initial state to ``state``, both included."""
        parent = self._parent.view()
        out = [state]
        while state > 0:
            state = int(parent[state])
            out.append(state)
        return out[::-1]

    # -- the transitions -----------------------------------------------------------------------
    def expanded(self, successors: list[int] | np.ndarray) -> None:
        """The successors of the next state, in the order of its moves."""
        self._targets.append(successors)
        self._degree.push(len(successors))

    def expanded_many(self, successors: np.ndarray, degrees: list[int] | np.ndarray) -> None:
        """The successors of the next ``len(degrees)`` states, ``degrees[i]`` of them each."""
        self._targets.append(successors)
        self._degree.append(degrees)

    def out_degree(self, state: int) -> int:
        return int(self._degree[state])

    def _starts(self) -> np.ndarray:
        degree = self._degree.view()
        start = np.zeros(len(degree) + 1, np.int64)
        np.cumsum(degree, out=start[1:])
        return start

    def successors(self, state: int) -> list[int]:
        """The targets of ``state``'s moves, in move order."""
        start = int(self._degree.view()[:state].sum(dtype=np.int64))
        return self._targets.view()[start : start + int(self._degree[state])].tolist()

    @property
    def nbytes(self) -> int:
        """Bytes of the tree and of the transitions kept."""
        cols = (self._parent, self._actor, self._choice, self._targets, self._degree)
        return sum(c.n * c.view().itemsize for c in cols)

    # -- hotplug-completes ---------------------------------------------------------------------
    def can_finish(self, finished: list[int] | np.ndarray) -> np.ndarray:
        """Per state, True when some state of ``finished`` is reachable from it (the graph must be
        fully expanded)."""
        degree, targets = self._degree.view(), self._targets.view()
        n = len(degree)
        good = np.zeros(n, bool)
        good[np.asarray(finished, np.int64)] = True
        start = self._starts()
        bounds = [s for s in self.layer_starts if s < n] + [n]
        if len(bounds) < 3:
            bounds = [*range(0, n, 1 << 16), n]
        blocks = list(itertools.pairwise(bounds))[::-1]
        # Can-finish flows backwards along transitions.  Most run forwards in BFS order, so the
        # blocks (layers) are swept from the last to the first, each until it settles, and the
        # sweep is repeated until nothing changes (transitions back to earlier layers).
        changed = True
        while changed:
            changed = False
            for lo, hi in blocks:
                tgt = targets[start[lo] : start[hi]]
                src = np.repeat(np.arange(lo, hi, dtype=np.int64), degree[lo:hi])
                while True:
                    up = src[good[tgt]]
                    up = up[~good[up]]
                    if not up.size:
                        break
                    good[up] = True
                    changed = True
        return good

    def cannot_finish(self, finished: list[int] | np.ndarray) -> int | None:
        """The first state (in BFS order, so at minimal depth) from which no state of ``finished``
        is reachable; the graph must be fully expanded."""
        bad = np.flatnonzero(~self.can_finish(finished))
        return int(bad[0]) if bad.size else None

    def stuck_end(self, good: np.ndarray) -> tuple[int, list[int]] | None:
        """Where runs that can no longer finish end up: the first state (BFS order, so at the end
        of a shortest schedule) of a bottom strongly connected component of the states ``good``
        marks False, and a shortest cycle through it inside that component as its states in
        order (empty when it has no moves: a deadlock).  None when every state can finish."""
        bad = np.flatnonzero(~np.asarray(good, bool))
        if not bad.size:
            return None
        # The states that cannot finish, renumbered 0..k-1 in state order, with their moves (a
        # successor of such a state cannot finish either).
        local = np.full(len(good), -1, np.int64)
        local[bad] = np.arange(len(bad))
        start = self._starts()
        lengths = self._degree.view()[bad].astype(np.int64)
        sub_start = np.zeros(len(bad) + 1, np.int64)
        np.cumsum(lengths, out=sub_start[1:])
        at = np.repeat(start[bad] - sub_start[:-1], lengths) + np.arange(int(sub_start[-1]))
        sub_targets = local[self._targets.view()[at]]
        if (sub_targets < 0).any():
            raise AssertionError("a state that cannot finish has a successor that can")
        starts, targets = sub_start.tolist(), sub_targets.tolist()
        comp = _components(starts, targets)
        src_comp = np.repeat(np.asarray(comp, np.int64), lengths)
        leaves = np.unique(src_comp[src_comp != np.asarray(comp, np.int64)[sub_targets]])
        bottom = np.ones(max(comp) + 1, bool)
        bottom[leaves] = False
        end = int(np.flatnonzero(bottom[np.asarray(comp, np.int64)])[0])
        cycle = _cycle_through(end, comp, starts, targets)
        return int(bad[end]), [int(bad[v]) for v in cycle]


def _components(starts: list[int], targets: list[int]) -> list[int]:
    """Tarjan's strongly connected components of the graph of ``len(starts) - 1`` states
    (iterative; state v's successors are targets[starts[v]:starts[v + 1]])."""
    n = len(starts) - 1
    index = [-1] * n
    low = [0] * n
    comp = [-1] * n
    on_stack = bytearray(n)
    stack: list[int] = []
    counter = components = 0
    for root in range(n):
        if index[root] >= 0:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = 1
        work = [(root, starts[root])]
        while work:
            v, k = work[-1]
            if k < starts[v + 1]:
                work[-1] = (v, k + 1)
                w = targets[k]
                if index[w] < 0:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack[w] = 1
                    work.append((w, starts[w]))
                elif on_stack[w] and index[w] < low[v]:
                    low[v] = index[w]
                continue
            work.pop()
            if work:
                u = work[-1][0]
                if low[v] < low[u]:
                    low[u] = low[v]
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = 0
                    comp[w] = components
                    if w == v:
                        break
                components += 1
    return comp


def _cycle_through(state: int, comp: list[int], starts: list[int], targets: list[int]) -> list[int]:
    """A shortest cycle from ``state`` back to itself inside its component; [] if none."""
    parent = {state: -1}
    queue = deque([state])
    while queue:
        v = queue.popleft()
        for w in targets[starts[v] : starts[v + 1]]:
            if comp[w] != comp[state]:
                continue
            if w == state:
                path = [v]
                while path[-1] != state:
                    path.append(parent[path[-1]])
                return path[::-1]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    return []
