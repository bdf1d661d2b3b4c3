"""Memoised CPU steps: a step computed once per *local view* instead of once per state.

Most CPU steps of a search recompute a result already computed in another state (87 % of them
under ``all``, see shared/reference/checker-profile.md): the states differ in the other CPUs,
which the step never looks at.  A CPU's step reads its own CPU, the chipset, the devices, RAM
and the ghost state — everything of the machine but the other CPUs — and, through the hotplug
block, which slots hold a CPU.  That is the memo key.  Whatever reaches beyond it (an IPI, a
broadcast SMI, an eject, a firmware timeout that looks at the CPU it waits for) the hardware
reports on the step's log (``Log.cross``), and such a step is not memoised.

A cached result is the step's new CPU, the new rest of the machine, and the violations it
reported; it is applied to a state with the same local view by putting the CPU back among the
state's other CPUs.  ``tests/test_checker_engine.py`` compares memoised and plain exploration
state for state.
"""

from __future__ import annotations

from typing import Any

from smm_hotplug.hw.platform import Platform
from smm_hotplug.hw.state import Machine, present_mask
from smm_hotplug.hw.trace import Log

_CPUS = Machine._fields.index("cpus")
_DISABLED = object()


class StepMemo:
    """A drop-in for ``Platform.cpu_step`` (see ``System.moves``) that caches local steps."""

    def __init__(self, plat: Platform, limit: int = 1 << 15) -> None:
        self.plat = plat
        # Two generations of at most ``limit`` entries each: when the young one is full it
        # becomes the old one, and an old entry used again moves back to the young one — recent
        # local views stay, and a cached result (which holds new RAM images and devices) costs
        # memory only while it is in use.
        self.limit = limit
        self.table: dict[tuple, tuple] = {}
        self.old: dict[tuple, tuple] = {}
        self.hits = 0
        self.misses = 0
        self.cross = 0  # steps that reached beyond their local view (not cached)
        self._m: Machine | None = None
        self._ids: tuple | None = None
        self._present = 0
        assert _CPUS == 0, "the memo key takes the machine's fields after the CPUs"

    def context(self, m: Machine, ids: tuple | None) -> None:
        """The machine whose CPUs are about to step, and ``ids`` naming its local view cheaply:
        (ids of each CPU, id of the rest of the machine) from the search's part tables — equal
        ids, equal values — or None."""
        self._m, self._ids = m, ids
        self._present = present_mask(m)

    def __call__(self, m: Machine, slot: int, log: Log) -> Machine | None:
        if log.record:  # a recording log wants every event: run the step itself
            return self.plat.cpu_step(m, slot, log)
        cpus = m.cpus
        if m is self._m and self._ids is not None:
            cpu_ids, rest_id = self._ids
            key: tuple = (slot, cpu_ids[slot], self._present, rest_id)
        else:
            if m is not self._m:
                self.context(m, None)
            key = (slot, cpus[slot], self._present, m[1:])
        got = self.table.get(key)
        if got is None:
            got = self.old.pop(key, None)
            if got is not None:
                self._keep(key, got)
        if got is not None:
            self.hits += 1
            cpu, rest, violations = got
            if violations:
                log.violations.extend(violations)
            if cpu is _DISABLED:
                return None
            return Machine._make(((*cpus[:slot], cpu, *cpus[slot + 1 :]), *rest))
        self.misses += 1
        seen, was_cross = len(log.violations), log.cross
        log.cross = False
        out = self.plat.cpu_step(m, slot, log)
        crossed = log.cross
        log.cross = was_cross or crossed
        if crossed:
            self.cross += 1
            return out
        others = [i for i, (a, b) in enumerate(zip(cpus, out.cpus, strict=True)) if a is not b] if out else []
        if others and others != [slot]:
            raise AssertionError(f"cpu{slot}'s step changed another CPU without reporting it (Log.cross)")
        entry: tuple[Any, Any, tuple] = (
            (_DISABLED, None, tuple(log.violations[seen:]))
            if out is None
            else (out.cpus[slot], out[1:], tuple(log.violations[seen:]))
        )
        self._keep(key, entry)
        return out

    def _keep(self, key: tuple, entry: tuple) -> None:
        if len(self.table) >= self.limit:
            self.old, self.table = self.table, {}
        self.table[key] = entry

    def stats(self) -> dict[str, int]:
        entries = len(self.table) + len(self.old)
        return {"hits": self.hits, "misses": self.misses, "cross": self.cross, "entries": entries}
