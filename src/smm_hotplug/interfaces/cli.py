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
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.designs.catalog import DEFAULT_DESIGN
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Scenario

EXIT_OK = 0
EXIT_VIOLATED = 1
EXIT_USAGE = 2


def _options(*opts: Callable[[Any], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return apply


scenario_options = _options(
    click.option("--boot-cpus", type=int, default=2, show_default=True, help="CPUs present at power-on."),
    click.option("--max-cpus", type=int, default=4, show_default=True, help="Possible CPUs (slots)."),
    click.option("--plug", type=int, default=2, show_default=True, help="CPUs to hot-add."),
    click.option("--unplug", type=int, default=1, show_default=True, help="CPUs to hot-remove afterwards."),
)

design_options = _options(
    click.option(
        "--design", default=DEFAULT_DESIGN, show_default=True, help="Design id (see `smm-hotplug designs`)."
    ),
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
    click.echo(f"{'all':28} every adversary above at once")


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
    help="Replay a schedule saved by `check` or `witness --trace-out` step by step (its setup wins).",
)
@click.option("--verbose", "-v", is_flag=True, help="Also show every register and memory access.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the timeline.")
@HTML_OPTION
def simulate(
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
    design: str,
    seed: int,
    replay: str | None,
    verbose: bool,
    as_json: bool,
    html_out: Path | None,
    **opts: Any,
) -> None:
    """Boot, hot-add --plug CPUs, hot-remove --unplug of them; print the timeline and a summary."""
    from smm_hotplug.checker.traces import load
    from smm_hotplug.report.text import render_summary, render_timeline, simulation_json
    from smm_hotplug.simulator import simulate as run

    if replay is not None:
        setup, schedule = load(replay)
        res = run(setup.system(), detail=verbose, schedule=schedule)
        if res.outcome == "trace-diverged":
            actor, choice = schedule[len(res.steps)]
            raise UsageError(
                f"trace file {replay} does not fit this model: step {len(res.steps)} ({actor}/{choice}) "
                "is not possible from the state the steps before it reach"
            )
    else:
        setup = _setup(design, (), Scenario(boot_cpus, max_cpus, plug, unplug), **opts)
        res = run(setup.system(), seed=seed, detail=verbose)
    if html_out is not None:
        from smm_hotplug.report.html import page, run_diagram

        if res.steps and not any(e.detail for st in res.steps for e in st.events):
            res = run(res.system, detail=True, schedule=[(st.actor, st.choice) for st in res.steps])
        status = ", ".join(f"{p}: {v['status']}" for p, v in res.property_status().items())
        section = run_diagram("run", f"{res.system.design.id}: simulated run", status, res)
        html_out.write_text(
            page(
                f"smm-hotplug simulate — {res.system.design.id}",
                f"Outcome: {res.outcome} after {len(res.steps)} steps.",
                [section],
            )
        )
    if as_json:
        click.echo(json.dumps(simulation_json(res, verbose), indent=2))
    else:
        console = Console(highlight=False)
        render_timeline(res, console, verbose)
        render_summary(res, console)
        if html_out is not None:
            console.print(f"diagram written to {html_out}")
    sys.exit(EXIT_OK if res.ok else EXIT_VIOLATED)


# -- check ----------------------------------------------------------------------------------------
@cli.command()
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
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
    design: str,
    attack_ids: tuple[str, ...],
    as_json: bool,
    trace_out: Path | None,
    limits: Limits,
    options: Any,
    html_out: Path | None,
    **opts: Any,
) -> None:
    """Explore every interleaving: prove every property or print the shortest violating trace
    (and name the hard cases the exploration went through, see `smm-hotplug cases`)."""
    from smm_hotplug.checker.run import NONE, run_check
    from smm_hotplug.checker.traces import save

    setup = _setup(design, attack_ids, Scenario(boot_cpus, max_cpus, plug, unplug), **opts)
    res = _with_progress(
        lambda monitor: run_check(setup, limits=limits, options=options, monitor=monitor), as_json
    )
    doc = res.to_json()
    if trace_out is not None and res.verdict == "violated":
        save(trace_out, setup, doc)
    if html_out is not None:
        from smm_hotplug.report.checks import cases_reached
        from smm_hotplug.report.html import matrix_table, page, trace_section

        column = "+".join(res.attacks) or NONE  # the table's one column
        sections = [trace_section(setup.system(), res, "trace")] if res.verdict == "violated" else []
        res_for_table = dataclasses.replace(res, attacks=[column] if res.attacks else [])
        html_out.write_text(
            page(
                f"smm-hotplug check — {res.design}",
                f"Properties judged: {', '.join(res.judged)}. "
                f"Hard cases reached: {', '.join(cases_reached(res)) or 'none'}.",
                sections,
                matrix_table([res_for_table], {(res.design, column): "trace"} if sections else {}),
            )
        )
    _print_and_exit(res, doc, as_json, trace_out, {"holds": EXIT_OK, "violated": EXIT_VIOLATED})


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
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
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
    setup = _setup(design, attack_ids, Scenario(boot_cpus, max_cpus, plug, unplug), **opts)
    res = _with_progress(
        lambda monitor: run_witness(setup, case, limits, options=options, monitor=monitor), as_json
    )
    doc = res.to_json()
    if trace_out is not None and res.verdict == "reached":
        save(trace_out, setup, doc)
    _print_and_exit(res, doc, as_json, trace_out, {"reached": EXIT_OK, "unreachable": EXIT_VIOLATED})


def _print_and_exit(
    res: Any, doc: dict, as_json: bool, trace_out: Path | None, exits: dict[str, int]
) -> None:
    """Print a check or witness (JSON or text), say where its schedule went, exit by verdict
    (anything not in ``exits``, i.e. incomplete, is 2)."""
    from smm_hotplug.report.checks import render_check

    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        console = Console(highlight=False)
        render_check(res, console)
        if trace_out is not None and res.schedule:
            console.print(
                f"schedule saved to {trace_out}; replay it with: smm-hotplug simulate --replay {trace_out}"
            )
    sys.exit(exits.get(res.verdict, EXIT_USAGE))


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


def _with_cell_progress(job: Callable[[Any], Any]) -> Any:
    """Run ``job(done)`` (a matrix) with a rich progress bar over its cells on stderr when it is a
    terminal."""
    err = Console(stderr=True)
    if not err.is_terminal:
        return job(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"))
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("checking", total=None)

        def done(res: Any, finished: int, total: int) -> None:
            column = "+".join(res.attacks) or "none"
            bar.update(
                task, completed=finished, total=total, description=f"{res.design} × {column}: {res.verdict}"
            )

        return job(done)


def matrix_limits(command: Callable[..., Any]) -> Callable[..., Any]:
    """Per-cell limits and --workers, shared by `matrix` and `report`."""
    command = click.option(
        "--workers", type=int, default=None, help="Parallel worker processes (default: one per core)."
    )(command)
    return limit_options(MATRIX_CELL_CAP, " a cell")(command)


def _check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UsageError("--workers must be positive")


@cli.command()
@scenario_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of check objects.")
@matrix_limits
def matrix(
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
    as_json: bool,
    limits: Limits,
    workers: int | None,
) -> None:
    """Every design × every adversary (plus none and all): verdicts, properties, figures."""
    from smm_hotplug.checker.run import run_matrix
    from smm_hotplug.report.checks import render_matrix

    _check_workers(workers)
    scenario = Scenario(boot_cpus, max_cpus, plug, unplug)
    results = _with_cell_progress(lambda done: run_matrix(scenario, limits, workers, done=done))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in results], indent=2))
    else:
        render_matrix(results, Console(highlight=False))


@cli.command()
@scenario_options
@click.option(
    "--design", "design_ids", multiple=True, metavar="ID", help="Designs to include (default: all)."
)
@click.option(
    "--attack",
    "attack_ids",
    multiple=True,
    metavar="ID",
    help="Adversary columns to include, `none` and `all` allowed (default: every one).",
)
@click.option(
    "--output",
    "-o",
    "out",
    type=OUTPUT_FILE,
    required=True,
    help="HTML file to write.",
)
@matrix_limits
def report(
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
    design_ids: tuple[str, ...],
    attack_ids: tuple[str, ...],
    out: Path,
    limits: Limits,
    workers: int | None,
) -> None:
    """One self-contained HTML page: the matrix, every shortest attack and the benign hot-add/remove."""
    from smm_hotplug.checker.run import NONE, run_matrix
    from smm_hotplug.checker.traces import CheckSetup
    from smm_hotplug.designs.catalog import DEFAULT_DESIGN
    from smm_hotplug.report.html import benign_sections, matrix_table, page, trace_section

    scenario = Scenario(boot_cpus, max_cpus, plug, unplug)
    _check_workers(workers)
    results = _with_cell_progress(
        lambda done: run_matrix(
            scenario, limits, workers, list(design_ids) or None, list(attack_ids) or None, done=done
        )
    )
    sections, anchors = [], {}
    for r in results:
        if r.verdict != "violated":
            continue
        column = r.attacks[0] if r.attacks else NONE
        anchor = f"trace-{r.design}-{column}"
        anchors[(r.design, column)] = anchor
        sections.append(trace_section(CheckSetup(r.design, scenario, tuple(r.attacks)).system(), r, anchor))
    sections += benign_sections(CheckSetup(DEFAULT_DESIGN, scenario).system())
    intro = (
        f"{boot_cpus} boot CPUs, {max_cpus} possible, plug {plug}, unplug {unplug}. Each cell: verdict, the "
        "property violated, states explored and seconds; a violated cell links to its shortest attack."
    )
    out.write_text(
        page("smm-hotplug: designs × adversaries", intro, sections, matrix_table(results, anchors))
    )
    click.echo(f"report written to {out}: {len(results)} checks, {len(sections)} diagrams")


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
