"""The ``smm-hotplug`` command line."""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.designs.catalog import DEFAULT_DESIGN
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE, FIRMWARE_VERSIONS
from smm_hotplug.world import Scenario

EXIT_OK = 0
EXIT_VIOLATED = 1
EXIT_USAGE = 2
# Tables and lines written into a pipe or a file are laid out for this width, i.e. not wrapped.
UNWRAPPED_WIDTH = 10_000


def _options(*opts: Callable[[Any], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return apply


def scenario_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--smp (or its shorthands --boot-cpus/--max-cpus), --plug and --unplug, handed to the
    command as one ``scenario: Scenario``."""
    options = _options(
        click.option(
            "--smp",
            metavar="SPEC",
            default=None,
            help="CPUs as QEMU's -smp spells it, [cpus=]N,maxcpus=M,sockets=S,dies=D,cores=C,threads=T "
            "(pc-q35-7.2 fills in and checks the rest; APIC IDs follow the topology).  "
            "Default: cpus=2,maxcpus=4.",
        ),
        click.option(
            "--boot-cpus", type=int, default=None, help="CPUs present at power-on (--smp cpus=N; default 2)."
        ),
        click.option(
            "--max-cpus", type=int, default=None, help="Possible CPUs (--smp maxcpus=M; default 4)."
        ),
        click.option("--plug", type=int, default=2, show_default=True, help="CPUs to hot-add."),
        click.option(
            "--unplug", type=int, default=1, show_default=True, help="CPUs to hot-remove afterwards."
        ),
    )

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        smp, boot, most = kwargs.pop("smp"), kwargs.pop("boot_cpus"), kwargs.pop("max_cpus")
        plug, unplug = kwargs.pop("plug"), kwargs.pop("unplug")
        return fn(*args, scenario=_scenario(smp, boot, most, plug, unplug), **kwargs)

    return options(command)


def _scenario(smp: str | None, boot: int | None, most: int | None, plug: int, unplug: int) -> Scenario:
    """Without --smp: ``--boot-cpus`` of ``--max-cpus`` in QEMU's default topology; with it, the
    shorthands stand for its cpus= and maxcpus= keys."""
    if smp is None:
        boot, most = 2 if boot is None else boot, 4 if most is None else most
        for flag, value in (("--boot-cpus", boot), ("--max-cpus", most)):
            if value < 0:
                raise UsageError(f"{flag} must not be negative (got {value})")
        return Scenario(boot, most, plug, unplug)
    from smm_hotplug.hw.config import smp_config, smp_values

    given = smp_values(smp)
    for key, flag, value in (("cpus", "--boot-cpus", boot), ("maxcpus", "--max-cpus", most)):
        if value is None:
            continue
        if key in given and given[key] != value:
            raise UsageError(f"{flag} {value} contradicts --smp {key}={given[key]}")
        given[key] = value
    return Scenario.from_smp(smp_config(given), plug, unplug)


FIRMWARE_OPTION = click.option(
    "--firmware",
    type=click.Choice(FIRMWARE_VERSIONS),
    default=DEFAULT_FIRMWARE,
    show_default=True,
    help="edk2 version whose SMI rendezvous and hot-eject the firmware follows (see README).",
)

design_options = _options(
    click.option(
        "--design", default=DEFAULT_DESIGN, show_default=True, help="Design id (see `smm-hotplug designs`)."
    ),
    FIRMWARE_OPTION,
    click.option(
        "--init-in-smm",
        type=click.Choice(["hold", "reset"]),
        default=None,
        help="INIT arriving in SMM: held until RSM (hardware/KVM, default) or reset at once (QEMU TCG).",
    ),
    click.option(
        "--vmm-keeps-smbase",
        is_flag=True,
        default=None,
        help="preinit-spares: the VMM gives a re-added CPU its slot's old SMBASE.",
    ),
    click.option(
        "--fw-no-window-lock", is_flag=True, help="Firmware forgets to lock the default-SMBASE window."
    ),
    click.option("--fw-no-smram-lock", is_flag=True, help="Firmware forgets D_LCK."),
    click.option("--fw-no-gate", is_flag=True, help="First-SMI handler does not wait at the APIC ID gate."),
    click.option(
        "--fw-no-broadcast", is_flag=True, help="Firmware negotiates no SMI features (no broadcast)."
    ),
)


def console(stderr: bool = False) -> Console:
    """A console for stdout (or stderr): on a terminal, rich's usual one; into a pipe or a file,
    one that never wraps a line (a log or grep sees each line whole)."""
    out = Console(stderr=stderr, highlight=False, markup=False)
    if out.is_terminal:
        return out
    return Console(stderr=stderr, highlight=False, markup=False, soft_wrap=True, width=UNWRAPPED_WIDTH)


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def note(text: str, as_json: bool) -> None:
    """A line about what the command did: on stdout, or on stderr when stdout is one JSON document."""
    click.echo(text, err=as_json)


def _setup(design: str, attacks: tuple[str, ...], scenario: Scenario, **opts: Any):
    from smm_hotplug.checker.traces import CheckSetup

    setup = CheckSetup(
        design=design,
        scenario=scenario,
        attacks=attacks,
        init_in_smm=opts.get("init_in_smm"),
        vmm_keeps_smbase=opts.get("vmm_keeps_smbase"),
        no_window_lock=opts.get("fw_no_window_lock", False),
        no_smram_lock=opts.get("fw_no_smram_lock", False),
        no_gate=opts.get("fw_no_gate", False),
        no_broadcast=opts.get("fw_no_broadcast", False),
        firmware=opts.get("firmware", DEFAULT_FIRMWARE),
    )
    setup.system()  # validates design, attacks and counts up front
    return setup


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="smm-hotplug")
def cli() -> None:
    """Executable, checkable model of SMM-safe CPU hotplug (QEMU/KVM + OVMF)."""


# -- catalogues -----------------------------------------------------------------------------
@cli.command()
def designs() -> None:
    """List the design ids."""
    from smm_hotplug.designs.catalog import DESIGNS

    for d in DESIGNS.values():
        click.echo(f"{d.id:22} {d.summary}")


@cli.command()
def attacks() -> None:
    """List the adversary ids (`all` is every one at once)."""
    from smm_hotplug.adversaries.catalog import ADVERSARIES

    for a in ADVERSARIES.values():
        budget = f" (budget {a.budget})" if a.budget > 1 else ""
        click.echo(f"{a.id:28} {a.summary}{budget}")
    others = ", ".join(a.id for a in ADVERSARIES.values() if not a.in_all)
    click.echo(f"{'all':28} every adversary above at once" + (f" but {others}" if others else ""))


@cli.command()
def properties() -> None:
    """List the property ids."""
    from smm_hotplug.invariants import PROPERTIES

    for pid, text in PROPERTIES.items():
        click.echo(f"{pid:22} {text}")


@cli.command()
def cases() -> None:
    """List the hard-case ids (situations a check reports it went through; see `witness`)."""
    from smm_hotplug.checker.cases import HARD_CASES

    for cid, case in HARD_CASES.items():
        click.echo(f"{cid:26} {case.summary}")


# Cells of the matrix beyond this many states are reported as incomplete rather than run for hours
# (the `all` column of the designs that hold; see bench/run.py for the figures).
MATRIX_CELL_CAP = 300_000


def limit_options(states_default: int | None, what: str) -> Callable[[Callable[..., Any]], Any]:
    """--max-states, --max-seconds, --max-memory and --max-depth of a search (``what``: "" or
    " a cell"), handed to the command as one validated ``limits: Limits``."""
    options = _options(
        click.option(
            "--max-states",
            type=int,
            default=states_default,
            show_default=states_default is not None,
            help=f"Stop{what} beyond this many states (verdict incomplete).",
        ),
        click.option("--max-seconds", type=float, default=None, help=f"Stop{what} after this many seconds."),
        click.option(
            "--max-memory",
            type=int,
            default=None,
            metavar="MIB",
            help=f"Stop{what} beyond this much resident memory (default: 85 % of what is available"
            + (", shared out between the workers)." if what else ")."),
        ),
        click.option(
            "--max-depth",
            type=int,
            default=None,
            help=f"Stop{what} once every schedule of this many steps is explored.",
        ),
    )

    def apply(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            limits = Limits(
                kwargs.pop("max_states"),
                kwargs.pop("max_seconds"),
                kwargs.pop("max_memory"),
                kwargs.pop("max_depth"),
            )
            return fn(*args, limits=limits.validate(), **kwargs)

        return options(command)

    return apply


def search_options(fn: Callable[..., Any]) -> Any:
    """--workers, --cluster and --fingerprint of one search, handed over as ``options``."""

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        from smm_hotplug.checker.search import Options

        workers, cluster = kwargs.pop("workers"), kwargs.pop("cluster")
        if workers < 1:
            raise UsageError("--workers must be positive")
        options = Options(fingerprint=kwargs.pop("fingerprint"), workers=workers, cluster=cluster or None)
        return fn(*args, options=options, **kwargs)

    return _options(
        click.option(
            "--workers",
            type=int,
            default=1,
            show_default=True,
            help="Worker processes sharing the search (same result on any number).",
        ),
        click.option(
            "--cluster",
            metavar="ADDRESS",
            envvar="DASK_SCHEDULER_ADDRESS",
            default=None,
            help="Run the search on the Dask cluster whose scheduler is at ADDRESS "
            "(default: $DASK_SCHEDULER_ADDRESS; see `smm-hotplug cluster-local`).",
        ),
        click.option(
            "--fingerprint",
            is_flag=True,
            help="Keep 64-bit fingerprints of states instead of the states (TLC-style; prints the "
            "probability that two states were merged).",
        ),
    )(command)


class OutputFile(click.Path):
    """A file the command will write: its directory must exist before any work is done."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        if not Path(path).resolve().parent.is_dir():
            self.fail(f"directory {Path(path).parent} does not exist", param, ctx)
        return path


OUTPUT_FILE = OutputFile()

HTML_OPTION = click.option(
    "--html",
    "html_out",
    type=OUTPUT_FILE,
    default=None,
    help="Also write a self-contained HTML page with the run as a sequence diagram.",
)


# -- simulate -----------------------------------------------------------------------------------
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


@cli.command()
@scenario_options
@design_options
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
        from smm_hotplug.checker.traces import replay as replay_file

        _refuse_with_replay(ctx)
        replayed = replay_file(replay, detail=verbose)
        res = replayed.run
    else:
        setup = _setup(design, (), scenario, **opts)
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


# -- JUnit ---------------------------------------------------------------------------------------
def junit_option(command_name: str) -> Callable[[Callable[..., Any]], Any]:
    """--junit FILE.  Put it right under @cli.command(): input the command refuses (an unknown id,
    a bad limit) is then written as an error case too, so a CI job sees why nothing was checked."""

    def apply(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            junit = kwargs.get("junit")
            try:
                return fn(*args, **kwargs)
            except UsageError as err:
                if junit is not None:
                    from smm_hotplug.report.junit import write_bad_input

                    write_bad_input(junit, command_name, str(err))
                raise

        return click.option(
            "--junit",
            type=OUTPUT_FILE,
            default=None,
            metavar="FILE",
            help="Also write JUnit XML: a test case per design × adversary cell (failure: violated; "
            "error: incomplete or bad input).",
        )(command)

    return apply


def _write_junit(
    junit: Path,
    command: str,
    scenario: Scenario,
    results: list[Any],
    unfinished: list[tuple[str, str]],
    as_json: bool,
) -> None:
    from smm_hotplug.report.junit import write_results

    _describe_violations(results, scenario)
    cases = write_results(junit, command, scenario, results, unfinished)
    note(f"JUnit XML written to {junit}: {plural(cases, 'test case')}", as_json)


def _describe_violations(results: list[Any], scenario: Scenario) -> None:
    """Give each violated matrix cell (checked without descriptions) its readable trace."""
    from smm_hotplug.checker.explore import replay_trace
    from smm_hotplug.checker.traces import CheckSetup

    for r in results:
        if r.verdict == "violated" and not r.trace:
            setup = CheckSetup(r.design, scenario, tuple(r.attacks), firmware=r.firmware or DEFAULT_FIRMWARE)
            r.trace = replay_trace(setup.system(), r.schedule)


# -- check ----------------------------------------------------------------------------------------
@cli.command()
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

    setup = _setup(design, attack_ids, scenario, **opts)
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
        _write_junit(junit, "check", scenario, [res], [], as_json)
    sys.exit({"holds": EXIT_OK, "violated": EXIT_VIOLATED}.get(res.verdict, EXIT_USAGE))


# -- witness ----------------------------------------------------------------------------------------
@cli.command()
@click.argument("case")
@scenario_options
@design_options
@click.option("--attack", "attack_ids", multiple=True, metavar="ID", help="Adversary id (repeatable).")
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
    setup = _setup(design, attack_ids, scenario, **opts)
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


def _run_cells(job: Callable[[Any], Any]) -> tuple[list[Any], list[tuple[str, str]]]:
    """A matrix with progress: (finished cells, cells Ctrl-C kept from finishing)."""
    from smm_hotplug.checker.run import MatrixInterrupted

    try:
        return _with_cell_progress(job), []
    except MatrixInterrupted as stop:
        return stop.results, stop.unfinished


def _interrupted(results: list[Any], unfinished: list[tuple[str, str]]) -> str:
    total = len(results) + len(unfinished)
    return f"interrupted (Ctrl-C): {len(results)} of {total} cells finished; every worker stopped"


def matrix_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Rows and columns, per-cell limits and --workers, shared by `matrix` and `report`."""
    command = click.option(
        "--workers", type=int, default=None, help="Parallel worker processes (default: one per core)."
    )(command)
    command = limit_options(MATRIX_CELL_CAP, " a cell")(command)
    command = click.option(
        "--attack",
        "attack_ids",
        multiple=True,
        metavar="ID",
        help="Adversary columns to include, `none` and `all` allowed (repeatable; default: every one).",
    )(command)
    return click.option(
        "--design",
        "design_ids",
        multiple=True,
        metavar="ID",
        help="Designs to include (repeatable; default: all).",
    )(command)


def _check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UsageError("--workers must be positive")


@cli.command()
@junit_option("matrix")
@scenario_options
@FIRMWARE_OPTION
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
@matrix_options
def matrix(
    scenario: Scenario,
    firmware: str,
    as_json: bool,
    expect_path: str | None,
    design_ids: tuple[str, ...],
    attack_ids: tuple[str, ...],
    limits: Limits,
    workers: int | None,
    junit: Path | None,
) -> None:
    """Every design × every adversary (plus none and all): verdicts, properties, figures, and a
    `+ DoS property (steps)` mark for each finding.

    Exits 0; with --expect, 1 when a cell's verdict or violated property changed; 2 on bad input or
    when Ctrl-C stopped it (the finished cells are reported)."""
    from smm_hotplug.checker.run import run_matrix
    from smm_hotplug.report.checks import render_matrix

    _check_workers(workers)
    expectation = None
    if expect_path is not None:
        from smm_hotplug.checker.expect import load

        expectation = load(expect_path, scenario)
    designs, columns = list(design_ids) or None, list(attack_ids) or None
    results, unfinished = _run_cells(
        lambda done: run_matrix(scenario, limits, workers, designs, columns, done=done, firmware=firmware)
    )
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        render_matrix(results, console())
    if junit is not None:
        _write_junit(junit, "matrix", scenario, results, unfinished, as_json)
    if unfinished:
        click.echo(f"smm-hotplug: {_interrupted(results, unfinished)}", err=True)
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


@cli.command()
@junit_option("report")
@scenario_options
@FIRMWARE_OPTION
@click.option(
    "--output",
    "-o",
    "out",
    type=OUTPUT_FILE,
    required=True,
    help="HTML file to write.",
)
@matrix_options
def report(
    scenario: Scenario,
    firmware: str,
    design_ids: tuple[str, ...],
    attack_ids: tuple[str, ...],
    out: Path,
    limits: Limits,
    workers: int | None,
    junit: Path | None,
) -> None:
    """One self-contained HTML page: the matrix, every shortest attack and the benign hot-add/remove.

    Exits 0, or 2 on bad input or when Ctrl-C stopped it (the page then shows the finished cells)."""
    from smm_hotplug.checker.run import run_matrix
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

    _check_workers(workers)
    designs, columns = list(design_ids) or None, list(attack_ids) or None
    results, unfinished = _run_cells(
        lambda done: run_matrix(scenario, limits, workers, designs, columns, done=done, firmware=firmware)
    )
    sections, anchors = [], {}
    for r in results:
        system = CheckSetup(r.design, scenario, tuple(r.attacks), firmware=firmware).system()
        if r.verdict == "violated":
            anchor = f"trace-{r.design}-{r.column}"
            anchors[(r.design, r.column)] = anchor
            sections.append(trace_section(system, r, anchor))
        for f in r.findings:
            sections.append(finding_section(system, r, f, finding_anchor(r.design, r.column, f.prop)))
    diagrams = len(sections)
    sections += benign_sections(CheckSetup(DEFAULT_DESIGN, scenario, firmware=firmware).system())
    intro = (
        f"-smp {scenario.smp}, plug {scenario.plug}, unplug {scenario.unplug}, firmware {firmware}. "
        "Each cell: verdict, the property violated, states explored and seconds; a violated cell links "
        "to its shortest attack. A '+ DoS' mark is a finding: a violation of a protocol property that a "
        "malicious OS can always cause (denial of service), so it does not decide the verdict; it links "
        "to its own shortest trace."
    )
    if unfinished:
        intro += f" Incomplete page: {_interrupted(results, unfinished)}."
    out.write_text(
        page(
            "smm-hotplug: designs × adversaries",
            intro,
            sections,
            matrix_table(results, anchors, linked_findings=True),
        )
    )
    benign = len(sections) - diagrams
    click.echo(
        f"report written to {out}: {plural(len(results), 'check')}, {plural(len(sections), 'diagram')} "
        f"({plural(diagrams, 'shortest trace')} of attacks and findings, {plural(benign, 'benign run')} "
        f"of {DEFAULT_DESIGN})"
    )
    if junit is not None:
        _write_junit(junit, "report", scenario, results, unfinished, False)
    if unfinished:
        click.echo(f"smm-hotplug: {_interrupted(results, unfinished)}", err=True)
        sys.exit(EXIT_USAGE)


@cli.command("cluster-local")
@click.option("--workers", type=int, default=2, show_default=True, help="Worker processes (one thread each).")
@click.option("--port", type=int, default=8786, show_default=True, help="Port of the scheduler (0: any).")
def cluster_local(workers: int, port: int) -> None:
    """Start a Dask scheduler and WORKERS worker processes on this machine, for `check --cluster`;
    runs until Ctrl-C.  (Dask's own `dask scheduler` and `dask worker` do the same across hosts.)"""
    from smm_hotplug.checker.cluster import ENV, run_local_cluster

    _check_workers(workers)

    def ready(address: str) -> None:
        click.echo(f"Dask scheduler at {address} with {workers} workers; Ctrl-C stops it.")
        click.echo(f"  smm-hotplug check --cluster {address} ...   (or: export {ENV}={address})")

    run_local_cluster(workers, port, ready)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input gives one line on stderr and exit status 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="smm-hotplug", standalone_mode=False)
    except UsageError as err:
        click.echo(f"smm-hotplug: error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        click.echo(f"smm-hotplug: error: {err.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("smm-hotplug: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as err:
        click.echo(f"smm-hotplug: error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
