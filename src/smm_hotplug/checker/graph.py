"""The explored state graph, kept in flat numpy arrays (a few bytes per state and per transition).

States are numbered in breadth-first order.  Each state but the first remembers the move that
first reached it (its BFS parent, the actor and the actor's choice), so the schedule to any
state is a walk up that tree and is a shortest one.  Where ``expanded`` is called the graph also
keeps every transition, as one array of targets cut into runs by state (compressed sparse rows),
for the ``hotplug-completes`` analysis once the space is explored.
"""

from __future__ import annotations

import itertools

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

    def expanded(self, successors: list[int] | np.ndarray) -> None:
        """The successors of the next state, in state order."""
        self._targets.append(successors)
        self._degree.push(len(successors))

    def expanded_many(self, successors: np.ndarray, degrees: list[int] | np.ndarray) -> None:
        """The successors of the next ``len(degrees)`` states, ``degrees[i]`` of them each."""
        self._targets.append(successors)
        self._degree.append(degrees)

    def out_degree(self, state: int) -> int:
        return int(self._degree[state])

    @property
    def nbytes(self) -> int:
        """Bytes of the tree and of the transitions kept."""
        cols = (self._parent, self._actor, self._choice, self._targets, self._degree)
        return sum(c.n * c.view().itemsize for c in cols)

    def cannot_finish(self, finished: list[int] | np.ndarray) -> int | None:
        """The first state (in BFS order, so at minimal depth) from which no state of ``finished``
        is reachable; the graph must be fully expanded."""
        return cannot_finish(self._degree.view(), self._targets.view(), finished, self.layer_starts)


def cannot_finish(
    degree: np.ndarray, targets: np.ndarray, finished: list[int] | np.ndarray, layer_starts: list[int]
) -> int | None:
    """The first state from which no state of ``finished`` is reachable, in a graph given as
    compressed rows: state s has ``degree[s]`` successors, listed in ``targets`` in state order."""
    n = len(degree)
    good = np.zeros(n, bool)
    good[np.asarray(finished, np.int64)] = True
    start = np.zeros(n + 1, np.int64)
    np.cumsum(degree, out=start[1:])
    bounds = [s for s in layer_starts if s < n] + [n]
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
    bad = np.flatnonzero(~good)
    return int(bad[0]) if bad.size else None
