"""Running checks: one setup, or the whole design × adversary matrix in parallel."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable

from smm_hotplug.adversaries.catalog import ADVERSARIES, ALL, resolve
from smm_hotplug.checker.cases import get_case
from smm_hotplug.checker.explore import (
    INTERRUPTED,
    CheckResult,
    Progress,
    accepted_properties,
    check,
    judged_properties,
)
from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.search import Monitor, Options
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE
from smm_hotplug.world import Scenario

NONE = "none"  # the benign baseline column of the matrix
Budgets = tuple[tuple[str, int], ...]  # (adversary id, budget) overrides


def run_check(
    setup: CheckSetup,
    limits: Limits | None = None,
    progress: Progress | None = None,
    describe: bool = True,
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> CheckResult:
    system = setup.system()  # validates ids and counts first
    adversaries = resolve(list(setup.attacks))
    return check(
        system,
        list(setup.attacks),
        judged_properties(adversaries),
        limits=limits,
        progress=progress,
        describe=describe,
        accepted=accepted_properties(adversaries),
        options=options,
        monitor=monitor,
    )


def run_witness(
    setup: CheckSetup,
    case: str,
    limits: Limits | None = None,
    progress: Progress | None = None,
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> CheckResult:
    """The shortest schedule from power-on to a state that is an instance of hard case ``case``."""
    get_case(case)
    system = setup.system()
    return check(
        system,
        list(setup.attacks),
        (),
        limits=limits,
        progress=progress,
        goal=case,
        options=options,
        monitor=monitor,
    )


def matrix_columns() -> list[str]:
    return [NONE, *ADVERSARIES, ALL]


Cell = tuple[str, str, Scenario, Limits | None, str, str | None, Budgets]
# design, column, scenario, limits, firmware, accel, budgets


class MatrixInterrupted(Exception):
    """Ctrl-C ended a matrix: ``results`` are the cells that finished (in matrix order, each
    complete or stopped by its own limits; a cell checked in this process when Ctrl-C came is
    among them as incomplete with its bound), ``unfinished`` the (design, column) of the others."""

    def __init__(self, results: list[CheckResult], unfinished: list[tuple[str, str]]) -> None:
        super().__init__(f"interrupted: {len(results)} of {len(results) + len(unfinished)} cells finished")
        self.results = results
        self.unfinished = unfinished


def _cell(args: Cell) -> CheckResult:
    design, column, scenario, limits, firmware, accel, budgets = args
    attacks = () if column == NONE else (column,)
    resolved = {a.id for a in resolve(list(attacks))}
    setup = CheckSetup(
        design,
        scenario,
        attacks,
        accel=accel,
        budgets=tuple((a, n) for a, n in budgets if a in resolved),
        firmware=firmware,
    )
    return run_check(setup, limits=limits, describe=False)


def _worker_init() -> None:
    # Ctrl-C reaches every process of the terminal's process group; the workers leave it to the
    # parent, which stops them all at once (a worker interrupted on its own would go on with the
    # next cell).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _indexed_cell(item: tuple[int, Cell]) -> tuple[int, CheckResult]:
    i, cell = item
    return i, _cell(cell)


def run_matrix(
    scenario: Scenario,
    limits: Limits | None = None,
    workers: int | None = None,
    designs: list[str] | None = None,
    columns: list[str] | None = None,
    done: Callable[[CheckResult, int, int], None] | None = None,
    firmware: str = DEFAULT_FIRMWARE,
    accel: str | None = None,
    budgets: Budgets = (),
) -> list[CheckResult]:
    """Every design against every column (no adversary, each adversary, all), in parallel; ``limits``
    apply to each cell (an automatic memory limit is shared out between the workers), ``accel``
    and ``budgets`` (adversary id, budget) to every cell the adversary is in.  ``done`` is told
    of each finished cell: (result, cells finished, cells in all).  ``firmware``: the edk2
    version every design's firmware follows.  Ctrl-C stops every worker at once and raises
    MatrixInterrupted with the cells that finished."""
    designs = designs or list(DESIGNS)
    columns = columns or matrix_columns()
    for d in designs:
        # unknown ids and impossible counts fail here, once
        CheckSetup(d, scenario, firmware=firmware, accel=accel).system()
    in_play = {a.id for a in resolve([c for c in columns if c != NONE])}
    for aid, n in budgets:
        if aid not in in_play:
            raise UsageError(f"--budget {aid}={n}: {aid} is not among the attacks of this run")
    workers = workers or min(len(designs) * len(columns), os.cpu_count() or 1)
    limits = (limits or Limits()).per_worker(workers)
    cells: list[Cell] = [
        (d, col, scenario, limits, firmware, accel, budgets) for d in designs for col in columns
    ]
    results: list[CheckResult | None] = [None] * len(cells)

    def record(i: int, res: CheckResult) -> None:
        results[i] = res
        if done is not None:
            done(res, sum(r is not None for r in results), len(cells))

    def interrupted() -> MatrixInterrupted:
        finished = [r for r in results if r is not None]
        unfinished = [(c[0], c[1]) for c, r in zip(cells, results, strict=True) if r is None]
        return MatrixInterrupted(finished, unfinished)

    if workers <= 1:
        try:
            for i, cell in enumerate(cells):
                res = _cell(cell)  # the search itself turns Ctrl-C into an incomplete result
                record(i, res)
                if res.stopped == INTERRUPTED:
                    raise interrupted()
        except KeyboardInterrupt:
            raise interrupted() from None
        return [r for r in results if r is not None]
    pool = multiprocessing.Pool(workers, initializer=_worker_init)
    try:
        for i, res in pool.imap_unordered(_indexed_cell, enumerate(cells)):
            record(i, res)
    except KeyboardInterrupt:
        pool.terminate()  # every worker, at once, whatever it is checking
        pool.join()
        raise interrupted() from None
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()
    return [r for r in results if r is not None]
