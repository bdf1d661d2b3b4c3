"""The explored state graph, kept in flat arrays (a few bytes per state and per transition).

States are numbered in breadth-first order.  Each state but the first remembers the move that
first reached it (its BFS parent, the actor and the actor's choice), so the schedule to any
state is a walk up that tree and is a shortest one.  Where ``expanded`` is called the graph also
keeps every transition, as one array of targets cut into runs by state (compressed sparse rows),
for the ``hotplug-completes`` analysis once the space is explored.
"""

from __future__ import annotations

from array import array


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

    def cannot_finish(self, finished: list[int]) -> int | None:
        """The first state (in BFS order, so at minimal depth) from which no state of ``finished``
        is reachable; the graph must be fully expanded."""
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
        first = good.find(0)
        return None if first < 0 else first
