"""Running the history catalog (designs/history.py): each entry's own scenario checked twice, with
its fix reverted — the checker must find the entry's property violated — and with the fix in
place — the same scenario must hold (or show only the violation the entry names as known)."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

from smm_hotplug.checker.explore import CheckResult
from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.history import ENTRIES, Entry, get_entry
from smm_hotplug.world import Scenario


def entry_setup(entry: Entry, reverted: bool) -> CheckSetup:
    """The entry's scenario with its fix reverted, or with it in place."""
    sc = entry.scenario
    revert = (entry.id,) if reverted else ()
    return CheckSetup(
        sc.design,
        Scenario(sc.boot_cpus, sc.max_cpus, sc.plug, sc.unplug),
        sc.attacks,
        accel=sc.accel,
        firmware=sc.firmware,
        smi_features=sc.smi_features,
        revert=revert,
        backport=tuple(b for b in sc.backport if b not in revert),
    )


@dataclass
class EntryResult:
    entry: Entry
    reverted: CheckResult  # the scenario with the fix reverted
    fixed: CheckResult  # the same scenario with the fix in place

    @property
    def rediscovered(self) -> bool:
        """With the fix reverted the checker finds the entry's property violated."""
        return self.reverted.verdict == "violated" and self.reverted.prop == self.entry.prop

    @property
    def fixed_holds(self) -> bool:
        """With the fix in place the same scenario holds."""
        return self.fixed.verdict == "holds"

    @property
    def ok(self) -> bool:
        return self.rediscovered and self.fixed_holds and not self.missing()

    def missing(self) -> list[str]:
        """The entry's ``shows`` fragments the reverted run's trace lacks (in their order; the
        last may be in the verdict's detail)."""
        lines = [t.text for t in self.reverted.trace] + [self.reverted.detail or ""]
        out, at = [], 0
        for fragment in self.entry.shows:
            found = next((i for i in range(at, len(lines)) if fragment in lines[i]), None)
            if found is None:
                out.append(fragment)
            else:
                at = found + 1
        return out

    def problems(self) -> list[str]:
        """What differs from the catalog's claim, one line each."""
        out = []
        e = self.entry
        if not self.rediscovered:
            got = self.reverted.verdict + (f" {self.reverted.prop}" if self.reverted.prop else "")
            out.append(f"{e.id}: with the fix reverted expected {e.prop} violated, got {got}")
        elif self.missing():
            out.append(f"{e.id}: the shortest trace does not show: {'; '.join(self.missing())}")
        if not self.fixed_holds:
            got = self.fixed.verdict + (f" {self.fixed.prop}" if self.fixed.prop else "")
            out.append(f"{e.id}: with the fix in place expected holds, got {got}")
        return out


Task = tuple[str, bool, Limits | None]


def _task(task: Task) -> CheckResult:
    entry_id, reverted, limits = task
    return run_check(entry_setup(get_entry(entry_id), reverted), limits=limits)


def _indexed(item: tuple[int, Task]) -> tuple[int, CheckResult]:
    i, task = item
    return i, _task(task)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


def run_history(
    ids: list[str] | None = None,
    limits: Limits | None = None,
    workers: int | None = None,
    done: Callable[[str, bool, CheckResult], None] | None = None,
) -> list[EntryResult]:
    """Check every entry of ``ids`` (default: the whole catalog), reverted and fixed, in
    parallel; ``done`` is told of each finished check (entry id, reverted, result)."""
    entries = [get_entry(i) for i in ids] if ids else list(ENTRIES.values())
    workers = workers or min(2 * len(entries), os.cpu_count() or 1)
    each = (limits or Limits()).per_worker(workers)  # an automatic memory limit is shared out
    tasks: list[Task] = [(e.id, rev, each) for e in entries for rev in (True, False)]
    results: list[CheckResult | None] = [None] * len(tasks)

    def record(i: int, res: CheckResult) -> None:
        results[i] = res
        if done is not None:
            done(tasks[i][0], tasks[i][1], res)

    if workers <= 1:
        for i, task in enumerate(tasks):
            record(i, _task(task))
    else:
        pool = multiprocessing.Pool(workers, initializer=_worker_init)
        try:
            for i, res in pool.imap_unordered(_indexed, enumerate(tasks)):
                record(i, res)
        except BaseException:
            pool.terminate()
            pool.join()
            raise
        pool.close()
        pool.join()
    out = []
    for k, entry in enumerate(entries):
        rev, fixed = results[2 * k], results[2 * k + 1]
        assert rev is not None and fixed is not None
        out.append(EntryResult(entry, rev, fixed))
    return out
