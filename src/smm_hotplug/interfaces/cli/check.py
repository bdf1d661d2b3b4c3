"""`smm-hotplug check` and `witness`: one search, its verdict or witness, its trace and its files."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE
from smm_hotplug.interfaces.cli import history as history_cli
from smm_hotplug.interfaces.cli.options import (
    BUDGET_OPTION,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_VIOLATED,
    HTML_OPTION,
    OUTPUT_FILE,
    console,
    design_options,
    junit_option,
    limit_options,
    note,
    plural,
    scenario_options,
    search_options,
    setup_of,
)
from smm_hotplug.world import Scenario


def write_junit(
    junit: Path,
    command: str,
    scenario: Scenario,
    results: list[Any],
    unfinished: list[tuple[str, str]],
    as_json: bool,
    budgets: tuple[tuple[str, int], ...] = (),
) -> None:
    from smm_hotplug.report.junit import write_results

    _describe_violations(results, scenario, budgets)
    cases = write_results(junit, command, scenario, results, unfinished)
    note(f"JUnit XML written to {junit}: {plural(cases, 'test case')}", as_json)


def _describe_violations(
    results: list[Any], scenario: Scenario, budgets: tuple[tuple[str, int], ...] = ()
) -> None:
    """Give each violated matrix cell (checked without descriptions) its readable trace."""
    from smm_hotplug.adversaries.catalog import resolve
    from smm_hotplug.checker.explore import replay_trace
    from smm_hotplug.checker.traces import CheckSetup

    for r in results:
        if r.verdict == "violated" and not r.trace:
            in_play = {a.id for a in resolve(list(r.attacks))}
            setup = CheckSetup(
                r.design,
                scenario,
                tuple(r.attacks),
                firmware=r.firmware or DEFAULT_FIRMWARE,
                accel=r.accel,
                budgets=tuple((a, n) for a, n in budgets if a in in_play),
            )
            r.trace = replay_trace(setup.system(), r.schedule)


# -- check ----------------------------------------------------------------------------------------
@click.command()
@junit_option("check")
@scenario_options
@design_options
@click.option(
    "--attack",
    "attack_ids",
    multiple=True,
    metavar="ID",
    help="Adversary id (repeatable; `all` for every one). None: the benign flow.",
)
@BUDGET_OPTION
@click.option("--revert", "revert_ids", multiple=True, metavar="ID", help=history_cli.REVERT_HELP)
@click.option("--history", "history_id", default=None, metavar="ID", help=history_cli.HISTORY_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option(
    "--trace-out",
    type=OUTPUT_FILE,
    default=None,
    help="Save the shortest violating trace as JSON (replay with `simulate --replay`).",
)
@limit_options(None, "")
@search_options
@HTML_OPTION
def check(
    scenario: Scenario,
    design: str,
    attack_ids: tuple[str, ...],
    revert_ids: tuple[str, ...],
    history_id: str | None,
    as_json: bool,
    trace_out: Path | None,
    limits: Limits,
    options: Any,
    html_out: Path | None,
    junit: Path | None,
    **opts: Any,
) -> None:
    """Explore every interleaving: prove the deciding properties or print the shortest violating
    trace; report violations of the properties accepted as denial of service (against an
    adversary that lets the OS deviate) as findings, each with its own shortest trace; name the
    hard cases the exploration went through (see `smm-hotplug cases`).  Exit status 0 when the
    deciding properties hold (findings or not), 1 when one is violated, 2 on bad input or when a
    limit stopped the search."""
    from smm_hotplug.checker.run import run_check
    from smm_hotplug.checker.traces import save

    entry = bool(revert_ids) or history_id is not None  # validated once the entry's scenario is in
    setup = setup_of(design, attack_ids, scenario, validate=not entry, **opts)
    setup = history_cli.with_history(setup, revert_ids, history_id)
    about = history_cli.describe_setup(setup, revert_ids, history_id)
    if about is not None:
        note(about, as_json)
    res = _with_progress(
        lambda monitor: run_check(setup, limits=limits, options=options, monitor=monitor), as_json
    )
    doc = res.to_json()
    if trace_out is not None and res.verdict == "violated":
        save(trace_out, setup, res)
    _print_check(res, doc, as_json, trace_out)
    if html_out is not None:
        from smm_hotplug.report.checks import cases_reached
        from smm_hotplug.report.html import finding_anchor, finding_section, matrix_table, page, trace_section

        column = res.column  # the table's one column
        system = setup.system()
        sections = [trace_section(system, res, "trace")] if res.verdict == "violated" else []
        anchors = {(res.design, column): "trace"} if sections else {}
        for f in res.findings:
            sections.append(finding_section(system, res, f, finding_anchor(res.design, column, f.prop)))
        res_for_table = dataclasses.replace(res, attacks=[column] if res.attacks else [])
        accepted = f" Accepted as denial of service: {', '.join(res.accepted)}." if res.accepted else ""
        html_out.write_text(
            page(
                f"smm-hotplug check — {res.design}",
                f"Properties deciding: {', '.join(res.judged)}.{accepted} "
                f"Hard cases reached: {', '.join(cases_reached(res)) or 'none'}.",
                sections,
                matrix_table([res_for_table], anchors, linked_findings=True),
            )
        )
        what = "the shortest trace as a sequence diagram" if sections else "no diagram (nothing violated)"
        note(f"HTML page written to {html_out}: the verdict table and {what}", as_json)
    if junit is not None:
        write_junit(junit, "check", setup.scenario, [res], [], as_json)
    sys.exit({"holds": EXIT_OK, "violated": EXIT_VIOLATED}.get(res.verdict, EXIT_USAGE))


# -- witness ----------------------------------------------------------------------------------------
@click.command()
@click.argument("case")
@scenario_options
@design_options
@click.option("--attack", "attack_ids", multiple=True, metavar="ID", help="Adversary id (repeatable).")
@BUDGET_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@click.option(
    "--trace-out",
    type=OUTPUT_FILE,
    default=None,
    help="Save the schedule as JSON (replay with `simulate --replay [--html FILE]`).",
)
@limit_options(None, "")
@search_options
def witness(
    case: str,
    scenario: Scenario,
    design: str,
    attack_ids: tuple[str, ...],
    as_json: bool,
    trace_out: Path | None,
    limits: Limits,
    options: Any,
    **opts: Any,
) -> None:
    """Shortest schedule from power-on into hard case CASE (see `smm-hotplug cases`).

    Exits 0 with the schedule, 1 when no reachable state is an instance of CASE, 2 on bad input
    or when a limit (--max-states, --max-seconds, --max-memory, --max-depth) stops the search
    first."""
    from smm_hotplug.checker.cases import get_case
    from smm_hotplug.checker.run import run_witness
    from smm_hotplug.checker.traces import save

    get_case(case)
    setup = setup_of(design, attack_ids, scenario, **opts)
    res = _with_progress(
        lambda monitor: run_witness(setup, case, limits, options=options, monitor=monitor), as_json
    )
    doc = res.to_json()
    if trace_out is not None and res.verdict == "reached":
        save(trace_out, setup, res, case=case)
    _print_check(res, doc, as_json, trace_out)
    sys.exit({"reached": EXIT_OK, "unreachable": EXIT_VIOLATED}.get(res.verdict, EXIT_USAGE))


def _print_check(res: Any, doc: dict, as_json: bool, trace_out: Path | None) -> None:
    """Print a check or witness (JSON or text) and say where its schedule went."""
    from smm_hotplug.report.checks import render_check

    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        render_check(res, console())
    if trace_out is not None and res.schedule:
        note(
            f"schedule saved to {trace_out}; replay it with: smm-hotplug simulate --replay {trace_out}",
            as_json,
        )


def _with_progress(job: Callable[[Any], Any], quiet: bool) -> Any:
    """Run ``job(monitor)`` with a rich progress display on stderr when it is a terminal: layer,
    states, states/s, memory and an estimate of what is left (checker.progress)."""
    err = Console(stderr=True)
    if quiet or not err.is_terminal:
        return job(None)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from smm_hotplug.checker.progress import line

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True
    ) as bar:
        task = bar.add_task("exploring", total=None)

        def monitor(snap: Any) -> None:
            bar.update(task, description=f"exploring: {line(snap)}")

        return job(monitor)
