"""Running checks: one setup, or the whole design × adversary matrix in parallel."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed

from smm_hotplug.adversaries.catalog import ADVERSARIES, ALL, resolve
from smm_hotplug.checker.cases import get_case
from smm_hotplug.checker.explore import CheckResult, Progress, check, judged_properties
from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.search import Monitor, Options
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.world import Scenario

NONE = "none"  # the benign baseline column of the matrix


def run_check(
    setup: CheckSetup,
    limits: Limits | None = None,
    progress: Progress | None = None,
    describe: bool = True,
    options: Options | None = None,
    monitor: Monitor | None = None,
) -> CheckResult:
    system = setup.system()  # validates ids and counts first
    judged = judged_properties(resolve(list(setup.attacks)))
    return check(
        system,
        list(setup.attacks),
        judged,
        limits=limits,
        progress=progress,
        describe=describe,
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


def _cell(args: tuple[str, str, Scenario, Limits | None]) -> CheckResult:
    design, column, scenario, limits = args
    attacks = () if column == NONE else (column,)
    return run_check(CheckSetup(design, scenario, attacks), limits=limits, describe=False)


def run_matrix(
    scenario: Scenario,
    limits: Limits | None = None,
    workers: int | None = None,
    designs: list[str] | None = None,
    columns: list[str] | None = None,
    done: Callable[[CheckResult, int, int], None] | None = None,
) -> list[CheckResult]:
    """Every design against every column (no adversary, each adversary, all), in parallel; ``limits``
    apply to each cell (an automatic memory limit is shared out between the workers).  ``done``
    is told of each finished cell: (result, cells finished, cells in all)."""
    designs = designs or list(DESIGNS)
    columns = columns or matrix_columns()
    for d in designs:
        CheckSetup(d, scenario).system()  # unknown ids and impossible counts fail here, once
    resolve([c for c in columns if c != NONE])
    workers = workers or min(len(designs) * len(columns), os.cpu_count() or 1)
    limits = (limits or Limits()).per_worker(workers)
    cells = [(d, col, scenario, limits) for d in designs for col in columns]
    results: list[CheckResult | None] = [None] * len(cells)

    def record(i: int, res: CheckResult) -> None:
        results[i] = res
        if done is not None:
            done(res, sum(r is not None for r in results), len(cells))

    if workers <= 1:
        for i, cell in enumerate(cells):
            record(i, _cell(cell))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_cell, cell): i for i, cell in enumerate(cells)}
            for fut in as_completed(futures):
                record(futures[fut], fut.result())
    return [r for r in results if r is not None]
