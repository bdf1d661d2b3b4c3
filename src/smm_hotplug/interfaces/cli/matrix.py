"""`smm-hotplug matrix` (and `matrix --history`): every design against every adversary column,
in parallel, with progress, JSON, JUnit and a comparison with a saved expectation."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.interfaces.cli import history as history_cli
from smm_hotplug.interfaces.cli.check import write_junit
from smm_hotplug.interfaces.cli.options import (
    ACCEL_OPTION,
    BUDGET_OPTION,
    EXIT_USAGE,
    EXIT_VIOLATED,
    FIRMWARE_OPTION,
    budgets_of,
    check_workers,
    console,
    junit_option,
    matrix_options,
    note,
    scenario_options,
)
from smm_hotplug.world import Scenario


def cell_line(res: Any, finished: int, total: int) -> str:
    """One finished matrix cell, as `matrix` and `report` log it when stderr is not a terminal."""
    what = res.verdict + (f" {res.prop}" if res.prop else "")
    figures = f"{res.states:,} states, {res.seconds:.2f} s"
    if res.bound is not None:
        figures += f", clean to {res.bound} steps"
    return f"[{finished}/{total}] {res.design} × {res.column}: {what} ({figures})"


def _with_cell_progress(job: Callable[[Any], Any]) -> Any:
    """Run ``job(done)`` (a matrix) with a rich progress bar over its cells on stderr when it is a
    terminal, else with a line on stderr per finished cell."""
    err = Console(stderr=True)
    if not err.is_terminal:

        def log(res: Any, finished: int, total: int) -> None:
            click.echo(cell_line(res, finished, total), err=True)

        return job(log)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("checking", total=None)

        def done(res: Any, finished: int, total: int) -> None:
            bar.update(
                task,
                completed=finished,
                total=total,
                description=f"{res.design} × {res.column}: {res.verdict}",
            )

        return job(done)


def run_cells(
    scenario: Scenario,
    limits: Limits,
    workers: int | None,
    designs: list[str] | None,
    columns: list[str] | None,
    firmware: str,
    accel: str,
    budgets: tuple[tuple[str, int], ...],
) -> tuple[list[Any], list[tuple[str, str]]]:
    """The matrix's cells with progress: (finished cells, cells Ctrl-C kept from finishing)."""
    from smm_hotplug.checker.run import MatrixInterrupted, run_matrix

    def job(done: Callable[[Any, int, int], None]) -> list[Any]:
        return run_matrix(
            scenario,
            limits,
            workers,
            designs,
            columns,
            done=done,
            firmware=firmware,
            accel=accel,
            budgets=budgets,
        )

    try:
        return _with_cell_progress(job), []
    except MatrixInterrupted as stop:
        return stop.results, stop.unfinished


def interrupted(results: list[Any], unfinished: list[tuple[str, str]]) -> str:
    total = len(results) + len(unfinished)
    return f"interrupted (Ctrl-C): {len(results)} of {total} cells finished; every worker stopped"


@click.command()
@junit_option("matrix")
@scenario_options
@FIRMWARE_OPTION
@ACCEL_OPTION
@BUDGET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of check objects.")
@click.option(
    "--expect",
    "expect_path",
    type=str,
    default=None,
    metavar="FILE",
    help="Compare every cell's verdict and violated property with FILE (a saved `matrix --json`); "
    "exit 1 listing each cell that changed.",
)
@click.option(
    "--history",
    "history",
    is_flag=True,
    help="Instead of the matrix, run the history catalog: each entry's scenario with its fix reverted "
    "(must violate the entry's property) and in place (must hold).",
)
@matrix_options
def matrix(
    scenario: Scenario,
    firmware: str,
    accel: str,
    budget_specs: tuple[str, ...],
    as_json: bool,
    expect_path: str | None,
    history: bool,
    design_ids: tuple[str, ...],
    attack_ids: tuple[str, ...],
    limits: Limits,
    workers: int | None,
    junit: Path | None,
) -> None:
    """Every design × every adversary (plus none and all): verdicts, properties, figures, and a
    `+ DoS property (steps)` mark for each finding.  With --history: the history catalog.

    Exits 0; with --expect, 1 when a cell's verdict or violated property changed; with --history,
    1 when an entry is not rediscovered or does not hold with its fix; 2 on bad input or when
    Ctrl-C stopped it (the finished cells are reported)."""
    from smm_hotplug.report.checks import render_matrix

    check_workers(workers)
    if history:
        _history_catalog(limits, workers, as_json)
        return
    budgets = budgets_of(budget_specs)
    expectation = None
    if expect_path is not None:
        from smm_hotplug.checker.expect import load

        expectation = load(expect_path, scenario, firmware, accel)
    designs, columns = list(design_ids) or None, list(attack_ids) or None
    results, unfinished = run_cells(scenario, limits, workers, designs, columns, firmware, accel, budgets)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        render_matrix(results, console())
    if junit is not None:
        write_junit(junit, "matrix", scenario, results, unfinished, as_json, budgets)
    if unfinished:
        click.echo(f"smm-hotplug: {interrupted(results, unfinished)}", err=True)
        sys.exit(EXIT_USAGE)
    if expectation is not None:
        changed, outside = expectation.compare(results, restricted=bool(design_ids or attack_ids))
        if outside:
            note(
                f"{outside} cells of {expect_path} lie outside --design/--attack and were not compared",
                as_json,
            )
        if changed:
            note(f"{len(changed)} of {len(results)} cells differ from {expect_path}:", as_json)
            for line in changed:
                note(f"  {line}", as_json)
            sys.exit(EXIT_VIOLATED)
        note(f"all {len(results)} cells match {expect_path}", as_json)


def _history_catalog(limits: Limits, workers: int | None, as_json: bool) -> None:
    """matrix --history: the catalog, its table (or JSON), exit 1 unless every entry is as claimed."""
    ctx = click.get_current_context()
    fixed = {"history", "as_json", "workers", "max_states", "max_seconds", "max_memory", "max_depth"}
    given = [p for p in ctx.command.params if p.name not in fixed and history_cli.given(ctx, p.name or "")]
    history_cli.refuse_with_catalog([p.opts[0] for p in given])
    err = Console(stderr=True)
    log = None if err.is_terminal and not as_json else (lambda line: click.echo(line, err=True))
    results = history_cli.run_catalog(limits, workers, log)
    if as_json:
        click.echo(json.dumps(history_cli.catalog_json(results), indent=2))
    else:
        history_cli.render_catalog(results, console())
    problems = [p for r in results for p in r.problems()]
    for line in problems:
        click.echo(f"smm-hotplug: {line}", err=True)
    if problems:
        sys.exit(EXIT_VIOLATED)
