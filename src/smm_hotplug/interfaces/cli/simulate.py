"""`smm-hotplug simulate`: one schedule, drawn from a seed or replayed from a trace file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from smm_hotplug.errors import UsageError
from smm_hotplug.interfaces.cli.options import (
    BUDGET_OPTION,
    EXIT_OK,
    EXIT_VIOLATED,
    HTML_OPTION,
    console,
    design_options,
    note,
    scenario_options,
    setup_of,
)
from smm_hotplug.world import Scenario

# What --replay may be combined with: the rest of the run's setup comes from the trace file.
REPLAY_COMPATIBLE = frozenset({"replay", "verbose", "as_json", "html_out"})


def _refuse_with_replay(ctx: click.Context) -> None:
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name not in REPLAY_COMPATIBLE
        and ctx.get_parameter_source(param.name or "") not in (None, ParameterSource.DEFAULT)
    ]
    if given:
        raise UsageError(
            f"--replay takes the design, its options and the scenario from the trace file; "
            f"{', '.join(given)} cannot be combined with it (only --verbose, --json and --html can)"
        )


@click.command()
@scenario_options
@design_options
@click.option(
    "--attack",
    "attack_ids",
    multiple=True,
    metavar="ID",
    help="Adversary id (repeatable; `all` for every one): the random schedule includes its actions.",
)
@BUDGET_OPTION
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random schedule.")
@click.option(
    "--replay",
    "replay",
    type=str,
    default=None,
    metavar="FILE",
    help="Replay a trace saved by `check` or `witness --trace-out` step by step; it must reproduce the "
    "recorded outcome (the setup comes from the file: only --verbose, --json and --html combine with it).",
)
@click.option("--verbose", "-v", is_flag=True, help="Also show every register and memory access.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the timeline.")
@HTML_OPTION
@click.pass_context
def simulate(
    ctx: click.Context,
    scenario: Scenario,
    design: str,
    attack_ids: tuple[str, ...],
    seed: int,
    replay: str | None,
    verbose: bool,
    as_json: bool,
    html_out: Path | None,
    **opts: Any,
) -> None:
    """Boot, hot-add --plug CPUs, hot-remove --unplug (the operator's slots, like every other
    choice, drawn from --seed); print the timeline and a summary.

    With --replay FILE: re-run a saved trace. Exit 1 when it reproduces its recorded violation, 0 when
    it reproduces its recorded hard case, 2 when the file is refused or does not reproduce."""
    from smm_hotplug.report.text import render_summary, render_timeline, simulation_json
    from smm_hotplug.simulator import simulate as run

    replayed = None
    if replay is not None:
        from smm_hotplug.checker.replay import replay as replay_file

        _refuse_with_replay(ctx)
        replayed = replay_file(replay, detail=verbose)
        res = replayed.run
    else:
        setup = setup_of(design, attack_ids, scenario, **opts)
        res = run(setup.system(), seed=seed, detail=verbose)
    if html_out is not None:
        from smm_hotplug.report.html import page, run_diagram

        if res.steps and not any(e.detail for st in res.steps for e in st.events):
            full = run(res.system, detail=True, schedule=[(st.actor, st.choice) for st in res.steps])
            full.judged, full.never_completes = res.judged, res.never_completes
            res = full
        status = ", ".join(f"{p}: {v['status']}" for p, v in res.property_status().items())
        section = run_diagram("run", f"{res.system.design.id}: simulated run", status, res)
        html_out.write_text(
            page(
                f"smm-hotplug simulate — {res.system.design.id}",
                f"Outcome: {res.outcome} after {len(res.steps)} steps."
                + (f" Replay of {replay}: reproduces {replayed.outcome()}." if replayed else ""),
                [section],
            )
        )
    if replayed is not None and replayed.other_model is not None:
        click.echo(
            f"smm-hotplug: note: trace file {replay} was {replayed.other_model}; it reproduces here", err=True
        )
    if as_json:
        doc = simulation_json(res, verbose)
        if replayed is not None:
            rec = replayed.recorded
            doc["replay"] = {
                "file": replay,
                "reproduced": True,
                "verdict": rec.verdict,
                "property": rec.property,
                "case": rec.case,
                "step": replayed.step,
                "judged": list(rec.judged),
                "tool_version": rec.tool_version,
                "model_digest": rec.model_digest,
            }
        click.echo(json.dumps(doc, indent=2))
    else:
        out = console()
        render_timeline(res, out, verbose)
        if replayed is not None:
            judged = ", ".join(replayed.recorded.judged) or "none (a witness search)"
            out.print(f"replay of {replay}: reproduces {replayed.outcome()}, as recorded (judged: {judged})")
        render_summary(res, out)
        if html_out is not None:
            out.print(f"HTML page written to {html_out}: 1 diagram")
    if as_json and html_out is not None:
        note(f"HTML page written to {html_out}: 1 diagram", True)
    sys.exit(EXIT_OK if res.ok else EXIT_VIOLATED)
