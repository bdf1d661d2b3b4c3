"""The ``smm-hotplug`` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from smm_hotplug.designs.catalog import DEFAULT_DESIGN, get_design, with_options
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Scenario, System

EXIT_OK = 0
EXIT_VIOLATED = 1
EXIT_USAGE = 2


def scenario_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed(
        [
            click.option(
                "--boot-cpus", type=int, default=2, show_default=True, help="CPUs present at power-on."
            ),
            click.option("--max-cpus", type=int, default=4, show_default=True, help="Possible CPUs (slots)."),
            click.option("--plug", type=int, default=2, show_default=True, help="CPUs to hot-add."),
            click.option(
                "--unplug", type=int, default=1, show_default=True, help="CPUs to hot-remove afterwards."
            ),
            click.option(
                "--design",
                default=DEFAULT_DESIGN,
                show_default=True,
                help="Design id (see `smm-hotplug designs`).",
            ),
            click.option(
                "--init-in-smm",
                type=click.Choice(["hold", "reset"]),
                default=None,
                help="INIT arriving in SMM: held until RSM (hardware/KVM) or reset at once (QEMU TCG).",
            ),
        ]
    ):
        fn = opt(fn)
    return fn


def build_system(
    design: str, init_in_smm: str | None, boot_cpus: int, max_cpus: int, plug: int, unplug: int, **fw: Any
) -> System:
    d = with_options(get_design(design), init_in_smm=init_in_smm, **fw)
    return System(d, Scenario(boot_cpus=boot_cpus, max_cpus=max_cpus, plug=plug, unplug=unplug))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="smm-hotplug")
def cli() -> None:
    """Executable, checkable model of SMM-safe CPU hotplug (QEMU/KVM + OVMF)."""


@cli.command()
@scenario_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random schedule.")
@click.option("--verbose", "-v", is_flag=True, help="Also show every register and memory access.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of the timeline.")
def simulate(
    design: str,
    init_in_smm: str | None,
    boot_cpus: int,
    max_cpus: int,
    plug: int,
    unplug: int,
    seed: int,
    verbose: bool,
    as_json: bool,
) -> None:
    """Boot, hot-add --plug CPUs, hot-remove --unplug of them; print the timeline and a summary."""
    from smm_hotplug.report.text import render_summary, render_timeline, simulation_json
    from smm_hotplug.simulator import simulate as run

    system = build_system(design, init_in_smm, boot_cpus, max_cpus, plug, unplug)
    res = run(system, seed=seed, detail=verbose)
    if as_json:
        click.echo(json.dumps(simulation_json(res, verbose), indent=2))
    else:
        console = Console(highlight=False)
        render_timeline(res, console, verbose)
        render_summary(res, console)
    sys.exit(EXIT_OK if res.ok else EXIT_VIOLATED)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input gives one line on stderr and exit status 2, never a traceback."""
    try:
        cli.main(args=argv, prog_name="smm-hotplug", standalone_mode=False)
    except UsageError as err:
        click.echo(f"smm-hotplug: error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.NoSuchOption as err:
        click.echo(f"smm-hotplug: error: {err.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        click.echo(f"smm-hotplug: error: {err.format_message()}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("smm-hotplug: aborted", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(EXIT_OK)


if __name__ == "__main__":
    main()
