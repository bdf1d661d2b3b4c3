"""The catalogues: `designs`, `attacks`, `properties`, `cases` and `history` list their ids."""

from __future__ import annotations

import click

from smm_hotplug.interfaces.cli import history as history_cli
from smm_hotplug.interfaces.cli.options import console


@click.command()
def designs() -> None:
    """List the design ids."""
    from smm_hotplug.designs.catalog import DESIGNS

    for d in DESIGNS.values():
        click.echo(f"{d.id:22} {d.summary}")


@click.command()
def attacks() -> None:
    """List the adversary ids (`all` is every one at once)."""
    from smm_hotplug.adversaries.catalog import ADVERSARIES

    for a in ADVERSARIES.values():
        budget = f" (budget {a.budget})" if a.budget > 1 else ""
        click.echo(f"{a.id:28} {a.summary}{budget}")
    others = ", ".join(a.id for a in ADVERSARIES.values() if not a.in_all)
    click.echo(f"{'all':28} every adversary above at once" + (f" but {others}" if others else ""))


@click.command()
def properties() -> None:
    """List the property ids."""
    from smm_hotplug.invariants import PROPERTIES

    for pid, text in PROPERTIES.items():
        click.echo(f"{pid:22} {text}")


@click.command()
def cases() -> None:
    """List the hard-case ids (situations a check reports it went through; see `witness`)."""
    from smm_hotplug.checker.cases import HARD_CASES

    for cid, case in HARD_CASES.items():
        click.echo(f"{cid:26} {case.summary}")


@click.command()
@click.argument("entry_ids", nargs=-1, metavar="[ID]...")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as a JSON list.")
def history(entry_ids: tuple[str, ...], as_json: bool) -> None:
    """List the history catalog: real QEMU and edk2 bugs the checker rediscovers (id, project,
    date, title, the race, the property that fails, its scenario).  `check --revert ID` checks one
    with its fix reverted, `matrix --history` checks them all."""
    history_cli.list_entries(entry_ids, as_json, console())
