"""The explored state graph, kept in flat arrays (a few bytes per state and per transition).

States are numbered in breadth-first order.  Each state but the first remembers the move that
first reached it (its BFS parent, the actor and the actor's choice), so the schedule to any
state is a walk up that tree and is a shortest one.  Where ``expanded`` is called the graph also
keeps every transition, as one array of targets cut into runs by state (compressed sparse rows),
for the ``hotplug-completes`` analysis once the space is explored: which states can still reach
a finished one (``can_finish``), and where a run that cannot ends up for ever (``stuck_end``: a
bottom strongly connected component of the rest — one state without moves, or a cycle).
"""

from __future__ import annotations

from array import array
from collections import deque


class StateGraph:
    def __init__(self) -> None:
        self._parent = array("i", [-1])
        self._actor = array("H", [0])
        self._choice = array("i", [0])
        self._actor_code: dict[str, int] = {"": 0}
        self._actor_name: list[str] = [""]
        self._targets = array("i")
        self._start = array("q", [0])  # state s's successors: _targets[_start[s]:_start[s + 1]]

    def add(self, parent: int, actor: str, choice: int) -> None:
        """The next state, first reached from ``parent`` by ``actor``'s ``choice``."""
        code = self._actor_code.get(actor)
        if code is None:
            code = self._actor_code[actor] = len(self._actor_name)
            self._actor_name.append(actor)
        self._parent.append(parent)
        self._actor.append(code)
        self._choice.append(choice)

    def path_to(self, state: int) -> list[tuple[str, int]]:
        """The schedule (actor, choice) from the initial state to ``state``."""
        out = []
        while state > 0:
            out.append((self._actor_name[self._actor[state]], self._choice[state]))
            state = self._parent[state]
        return out[::-1]

    def expanded(self, successors: list[int]) -> None:
        """The successors of the next state, in state order."""
        self._targets.extend(successors)
        self._start.append(len(self._targets))

    def out_degree(self, state: int) -> int:
        return self._start[state + 1] - self._start[state]

    def successors(self, state: int) -> array:
        return self._targets[self._start[state] : self._start[state + 1]]

    def states_to(self, state: int) -> list[int]:
        """The states of the BFS-tree path from the initial state to ``state``, both included."""
        out = [state]
        while state > 0:
            state = self._parent[state]
            out.append(state)
        return out[::-1]

    def can_finish(self, finished: list[int]) -> bytearray:
        """Per state, 1 when some state of ``finished`` is reachable from it (the graph must be
        fully expanded)."""
        n = len(self._start) - 1
        targets, start = self._targets, self._start
        # Predecessor lists in the same flat form: count, prefix sums, fill.
        pred_start = array("q", bytes(8 * (n + 1)))
        for t in targets:
            pred_start[t + 1] += 1
        for s in range(n):
            pred_start[s + 1] += pred_start[s]
        fill = array("q", pred_start)
        preds = array("i", bytes(4 * len(targets)))
        for s in range(n):
            for k in range(start[s], start[s + 1]):
                t = targets[k]
                preds[fill[t]] = s
                fill[t] += 1
        good = bytearray(n)
        stack = list(finished)
        for f in finished:
            good[f] = 1
        while stack:
            t = stack.pop()
            for k in range(pred_start[t], pred_start[t + 1]):
                s = preds[k]
                if not good[s]:
                    good[s] = 1
                    stack.append(s)
        return good

    def cannot_finish(self, finished: list[int]) -> int | None:
        """The first state (in BFS order, so at minimal depth) from which no state of ``finished``
        is reachable; the graph must be fully expanded."""
        first = self.can_finish(finished).find(0)
        return None if first < 0 else first

    def stuck_end(self, good: bytearray) -> tuple[int, list[int]] | None:
        """Where runs that can no longer finish end up: the first state (BFS order, so at the end
        of a shortest schedule) of a bottom strongly connected component of the states ``good``
        marks 0, and a shortest cycle through it inside that component as its states in order
        (empty when it has no moves: a deadlock).  None when every state can finish."""
        comp = self._components(good)
        if comp is None:
            return None
        n = len(good)
        bottom = bytearray(b"\x01") * (max(comp) + 1)
        for v in range(n):
            if good[v]:
                continue
            for w in self.successors(v):
                if comp[w] != comp[v]:
                    bottom[comp[v]] = 0
        end = next(v for v in range(n) if not good[v] and bottom[comp[v]])
        return end, self._cycle_through(end, comp)

    def _components(self, good: bytearray) -> list[int] | None:
        """Tarjan's strongly connected components of the states ``good`` marks 0 (iterative);
        -1 for the others.  None when there are none."""
        n = len(good)
        if good.find(0) < 0:
            return None
        targets, start = self._targets, self._start
        index = [-1] * n
        low = [0] * n
        comp = [-1] * n
        on_stack = bytearray(n)
        stack: list[int] = []
        counter = components = 0
        for root in range(n):
            if good[root] or index[root] >= 0:
                continue
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack[root] = 1
            work = [(root, start[root])]
            while work:
                v, k = work[-1]
                if k < start[v + 1]:
                    work[-1] = (v, k + 1)
                    w = targets[k]
                    if good[w]:
                        continue  # cannot happen: what can finish is no successor of what cannot
                    if index[w] < 0:
                        index[w] = low[w] = counter
                        counter += 1
                        stack.append(w)
                        on_stack[w] = 1
                        work.append((w, start[w]))
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

    def _cycle_through(self, state: int, comp: list[int]) -> list[int]:
        """A shortest cycle from ``state`` back to itself inside its component; [] if none."""
        parent = {state: -1}
        queue = deque([state])
        while queue:
            v = queue.popleft()
            for w in self.successors(v):
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
