"""What the commands share: exit codes, output helpers and the options that several commands take
(the scenario, the design and its variants, budgets, search limits, workers, output files)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from smm_hotplug.checker.limits import Limits
from smm_hotplug.designs.catalog import DEFAULT_DESIGN
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE, FIRMWARE_VERSIONS
from smm_hotplug.hw.config import ACCEL_KVM, ACCELS
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

ACCEL_OPTION = click.option(
    "--accel",
    type=click.Choice(ACCELS),
    default=ACCEL_KVM,
    show_default=True,
    help="Accelerator whose CPU rules apply: Linux 6.1 KVM or QEMU 7.2's TCG (how CPUs take SMI, "
    "NMI, INIT, SIPI).",
)

design_options = _options(
    click.option(
        "--design", default=DEFAULT_DESIGN, show_default=True, help="Design id (see `smm-hotplug designs`)."
    ),
    FIRMWARE_OPTION,
    ACCEL_OPTION,
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
    click.option(
        "--fw-smi-features",
        type=click.IntRange(0, 7),
        default=None,
        metavar="MASK",
        help="SMI features the firmware requests: broadcast 1, CPU hotplug 2, hot-unplug 4 (default 7).",
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


BUDGET_OPTION = click.option(
    "--budget",
    "budget_specs",
    multiple=True,
    metavar="ID=N",
    help="Give adversary ID a budget of N actions (repeatable; see `smm-hotplug attacks`).",
)


def budgets_of(specs: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    from smm_hotplug.adversaries.catalog import check_budgets, parse_budget

    budgets: dict[str, int] = {}
    for spec in specs:
        aid, n = parse_budget(spec)
        if aid in budgets:
            raise UsageError(f"--budget {spec}: a budget for {aid} was already given")
        budgets[aid] = n
    check_budgets(budgets)
    return tuple(budgets.items())


def setup_of(design: str, attacks: tuple[str, ...], scenario: Scenario, validate: bool = True, **opts: Any):
    from smm_hotplug.checker.traces import CheckSetup

    setup = CheckSetup(
        design=design,
        scenario=scenario,
        attacks=attacks,
        accel=opts.get("accel"),
        budgets=budgets_of(opts.get("budget_specs", ())),
        vmm_keeps_smbase=opts.get("vmm_keeps_smbase"),
        no_window_lock=opts.get("fw_no_window_lock", False),
        no_smram_lock=opts.get("fw_no_smram_lock", False),
        no_gate=opts.get("fw_no_gate", False),
        no_broadcast=opts.get("fw_no_broadcast", False),
        firmware=opts.get("firmware", DEFAULT_FIRMWARE),
        smi_features=opts.get("fw_smi_features"),
    )
    if validate:
        setup.system()  # validates design, attacks and counts up front
    return setup


# Cells of the matrix beyond this many states are reported as incomplete rather than run for hours
# (the `all` column of the designs that hold; see bench/model.py for the figures).
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


def check_workers(workers: int | None) -> None:
    if workers is not None and workers < 1:
        raise UsageError("--workers must be positive")
