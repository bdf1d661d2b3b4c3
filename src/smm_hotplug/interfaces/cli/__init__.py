"""The ``smm-hotplug`` command line: one click group whose commands live in this package, a
module each (options.py holds what they share).  ``main`` turns every refusal into one line on
stderr and exit status 2."""

from __future__ import annotations

import sys

import click

from smm_hotplug.errors import UsageError
from smm_hotplug.interfaces.cli import check, cluster, listings, matrix, report, simulate
from smm_hotplug.interfaces.cli.options import EXIT_OK, EXIT_USAGE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="smm-hotplug")
def cli() -> None:
    """Executable, checkable model of SMM-safe CPU hotplug (QEMU/KVM + OVMF)."""


for command in (
    listings.designs,
    listings.attacks,
    listings.properties,
    listings.cases,
    listings.history,
    simulate.simulate,
    check.check,
    check.witness,
    matrix.matrix,
    report.report,
    cluster.cluster_local,
):
    cli.add_command(command)


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
