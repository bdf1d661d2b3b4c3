"""Hash-consing of the states the checker keeps: equal parts of different states become one object.

Successor states share every part their move did not touch with their parent, but two
schedules that reach equal parts (the same CPU registers, the same RAM) by different paths
build separate, equal objects.  Under ``all`` on the default configuration 100,000 states hold
about 50,000 CPU tuples with 5,400 distinct values, 75,000 hotplug-block values with 58 distinct
ones and 9,600 RAM images (each with its page table) with 186 distinct ones.  The pool keeps one
object per value, which saves most of the memory a state costs, and makes comparing states
cheap (equal parts are the same object, which tuple comparison checks first).
"""

from __future__ import annotations

from smm_hotplug.hw.state import Machine
from smm_hotplug.world import World

_CPUS = Machine._fields.index("cpus")


class StatePool:
    def __init__(self) -> None:
        self._parts: list[dict] = [{} for _ in Machine._fields]
        self._cpu: dict = {}
        self._budgets: dict = {}
        self._unplugged: dict = {}

    def world(self, w: World) -> World:
        """``w`` built from pooled parts (equal to ``w``)."""
        parts = []
        for i, (pool, value) in enumerate(zip(self._parts, w.m, strict=True)):
            got = pool.get(value)
            if got is None:
                if i == _CPUS:
                    cpu = self._cpu
                    value = tuple([cpu.setdefault(c, c) for c in value])
                pool[value] = got = value
            parts.append(got)
        return World(
            Machine(*parts),
            w.done,
            self._budgets.setdefault(w.budgets, w.budgets),
            self._unplugged.setdefault(w.unplugged, w.unplugged),
        )
