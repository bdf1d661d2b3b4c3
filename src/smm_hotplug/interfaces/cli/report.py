"""`smm-hotplug report`: one self-contained HTML page with the matrix per accelerator, every
shortest attack and finding, the history catalog and the benign run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.hw.config import ACCEL_KVM, ACCELS
from smm_hotplug.interfaces.cli import history as history_cli
from smm_hotplug.interfaces.cli.check import write_junit
from smm_hotplug.interfaces.cli.matrix import interrupted, run_cells
from smm_hotplug.interfaces.cli.options import (
    BUDGET_OPTION,
    EXIT_USAGE,
    EXIT_VIOLATED,
    FIRMWARE_OPTION,
    OUTPUT_FILE,
    budgets_of,
    check_workers,
    junit_option,
    matrix_options,
    plural,
    scenario_options,
)
from smm_hotplug.world import Scenario


@click.command()
@junit_option("report")
@scenario_options
@FIRMWARE_OPTION
@click.option(
    "--accel",
    "accels",
    type=click.Choice(ACCELS),
    multiple=True,
    help="Accelerator(s) whose CPU rules apply, one matrix each (repeatable; default: kvm).",
)
@BUDGET_OPTION
@click.option(
    "--output",
    "-o",
    "out",
    type=OUTPUT_FILE,
    required=True,
    help="HTML file to write.",
)
@click.option(
    "--history/--no-history",
    "with_history",
    default=True,
    show_default=True,
    help="Also run the history catalog (`matrix --history`) and show each entry's trace.",
)
@matrix_options
def report(
    scenario: Scenario,
    firmware: str,
    design_ids: tuple[str, ...],
    attack_ids: tuple[str, ...],
    accels: tuple[str, ...],
    budget_specs: tuple[str, ...],
    out: Path,
    with_history: bool,
    limits: Limits,
    workers: int | None,
    junit: Path | None,
) -> None:
    """One self-contained HTML page: the matrix (one per accelerator), every shortest attack and
    finding, the history catalog (each real bug with its fix reverted and in place) and the benign
    hot-add/remove.

    Exits 0, 1 when a history entry is not rediscovered or does not hold with its fix, or 2 on bad
    input or when Ctrl-C stopped it (the page then shows the finished cells)."""
    from smm_hotplug.checker.traces import CheckSetup
    from smm_hotplug.designs.catalog import DEFAULT_DESIGN
    from smm_hotplug.report.html import (
        benign_sections,
        finding_anchor,
        finding_section,
        matrix_table,
        page,
        trace_section,
    )

    check_workers(workers)
    budgets = budgets_of(budget_specs)
    accels = tuple(dict.fromkeys(accels)) or (ACCEL_KVM,)
    several = len(accels) > 1
    designs, columns = list(design_ids) or None, list(attack_ids) or None
    sections, tables, results, unfinished = [], [], [], []
    for accel in accels:
        done_here, unfinished = run_cells(
            scenario, limits, workers, designs, columns, firmware, accel, budgets
        )
        results += done_here
        qualifier = accel if several else ""
        anchors = {}
        for r in done_here:
            setup = CheckSetup(
                r.design, scenario, tuple(r.attacks), accel=accel, budgets=budgets, firmware=firmware
            )
            if r.verdict == "violated":
                anchor = f"trace-{qualifier + '-' if qualifier else ''}{r.design}-{r.column}"
                anchors[(r.design, r.column)] = anchor
                sections.append(trace_section(setup.system(), r, anchor))
            for f in r.findings:
                anchor = finding_anchor(r.design, r.column, f.prop, qualifier)
                sections.append(finding_section(setup.system(), r, f, anchor))
        table = matrix_table(done_here, anchors, linked_findings=True, accel=qualifier)
        tables.append(f"<h3>accelerator {accel}</h3>{table}" if several else table)
        if unfinished:
            break  # Ctrl-C: the accelerators after this one are not checked
    diagrams = len(sections)
    history_html, history_problems = "", []
    if with_history and not unfinished:
        history_html, past, history_problems = _history_report(limits, workers)
        sections += past
    entries = len(sections) - diagrams
    sections += benign_sections(CheckSetup(DEFAULT_DESIGN, scenario, firmware=firmware).system())
    intro = (
        f"-smp {scenario.smp}, plug {scenario.plug}, unplug {scenario.unplug}, firmware {firmware}, "
        f"accelerator {', '.join(accels)}. "
        "Each cell: verdict, the property violated, states explored and seconds; a violated cell links "
        "to its shortest attack. A '+ DoS' mark is a finding: a violation of a protocol property that a "
        "malicious OS can always cause (denial of service), so it does not decide the verdict; it links "
        "to its own shortest trace."
    )
    if unfinished:
        intro += f" Incomplete page: {interrupted(results, unfinished)}."
    out.write_text(page("smm-hotplug: designs × adversaries", intro, sections, "".join(tables), history_html))
    benign = len(sections) - diagrams - entries
    past = f", {plural(entries, 'historical bug')}, each with its fix reverted" if with_history else ""
    click.echo(
        f"report written to {out}: {plural(len(results), 'check')}, {plural(len(sections), 'diagram')} "
        f"({plural(diagrams, 'shortest trace')} of attacks and findings{past}, "
        f"{plural(benign, 'benign run')} of {DEFAULT_DESIGN})"
    )
    if junit is not None:
        write_junit(junit, "report", scenario, results, unfinished, False, budgets)
    if unfinished:
        click.echo(f"smm-hotplug: {interrupted(results, unfinished)}", err=True)
        sys.exit(EXIT_USAGE)
    for line in history_problems:
        click.echo(f"smm-hotplug: {line}", err=True)
    if history_problems:
        sys.exit(EXIT_VIOLATED)


def _history_report(limits: Limits, workers: int | None) -> tuple[str, list[Any], list[str]]:
    """The report's history part: its table, one diagram per entry, and what is not as claimed."""
    from smm_hotplug.report.history import history_sections, history_table

    err = Console(stderr=True)
    log = None if err.is_terminal else (lambda line: click.echo(line, err=True))
    results = history_cli.run_catalog(limits, workers, log)
    return history_table(results), history_sections(results), [p for r in results for p in r.problems()]
