"""The history catalog on the command line: ``smm-hotplug history``, ``check --revert/--history``,
``matrix --history`` and the history section of ``report``.

The click commands and options are thin wrappers in the other modules of this package; what they
do is here (this module imports none of them).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm_hotplug.designs.history import BACKPORTED, ENTRIES, IN_MODEL, IN_VERSION, Entry, get_entry
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Scenario

if TYPE_CHECKING:
    from smm_hotplug.checker.traces import CheckSetup

REVERT_HELP = (
    "Take out the fix of history entry ID (see `smm-hotplug history`; repeatable): the check runs "
    "the first entry's own scenario unless --design, the CPU counts, --firmware, --accel, "
    "--fw-smi-features or --attack say otherwise (--budget applies to its adversaries)."
)
HISTORY_HELP = "Run history entry ID's own scenario with its fix in place (combine with --revert)."


# -- smm-hotplug history ---------------------------------------------------------------------------
FIX_STATUS = {
    IN_MODEL: "the model has it, --revert takes it out",
    IN_VERSION: "in edk2-current, not in the default edk2-stable202211",
    BACKPORTED: "not in QEMU 7.2; the scenario backports it",
}


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)


def entry_json(entry: Entry) -> dict[str, Any]:
    sc = entry.scenario
    return {
        "id": entry.id,
        "project": entry.project,
        "date": entry.date,
        "title": entry.title,
        "ref": entry.ref,
        "race": entry.race,
        "property": entry.prop,
        "scenario": {
            "design": sc.design,
            "boot_cpus": sc.boot_cpus,
            "max_cpus": sc.max_cpus,
            "plug": sc.plug,
            "unplug": sc.unplug,
            "attacks": list(sc.attacks),
            "accel": sc.accel,
            "firmware": sc.firmware,
            "smi_features": sc.smi_features,
            "backport": list(sc.backport),
        },
        "fix": entry.fix,
        "step": entry.step,
        "expressed": entry.expressed,
    }


def list_entries(ids: tuple[str, ...], as_json: bool, out: Console) -> None:
    """`smm-hotplug history [ID...]`: the entries, each with its race, property and scenario."""
    entries = [get_entry(i) for i in ids] if ids else list(ENTRIES.values())
    if as_json:
        click.echo(json.dumps([entry_json(e) for e in entries], indent=2))
        return
    for i, e in enumerate(entries):
        if i:
            out.print()
        out.print(Text(f"{e.id}  ({e.project}, {e.date}) {e.title}", style="bold"))
        out.print(f"  {e.ref}")
        for line in _wrap(e.race, 100):
            out.print(f"  {line}")
        out.print(f"  fails: {e.prop}")
        out.print(f"  scenario: {e.scenario.describe()}")
        out.print(f"  fix: {e.step}; {FIX_STATUS[e.fix]}")
        for n, line in enumerate(_wrap(e.expressed, 94)):
            out.print(f"  {'note: ' if n == 0 else '      '}{line}")
        out.print(f"  check: smm-hotplug check --revert {e.id}   (fixed: smm-hotplug check --history {e.id})")


# -- check --revert / --history -------------------------------------------------------------------
def given(ctx: click.Context, name: str) -> bool:
    """The command line set parameter ``name`` itself (not its default)."""
    return ctx.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)


def with_history(setup: CheckSetup, revert: tuple[str, ...], history: str | None) -> CheckSetup:
    """The check's setup once ``--revert``/``--history`` are applied: the first entry's scenario
    (configuration, adversaries, accelerator, firmware, SMI features, backported fixes) wherever
    the command line did not set that part itself, and the named fixes taken out; the command
    line's ``--budget`` applies to the adversaries the run ends up with."""
    if not revert and history is None:
        return setup
    ids = ([history] if history is not None else []) + list(revert)
    entry, *_ = (get_entry(i) for i in ids)  # every id is checked: an unknown one is an error
    revert = tuple(dict.fromkeys(revert))
    ctx = click.get_current_context()
    sc, user = entry.scenario, setup.scenario
    if given(ctx, "smp"):
        boot, most, topology = user.boot_cpus, user.max_cpus, user.topology
    else:
        boot = user.boot_cpus if given(ctx, "boot_cpus") else sc.boot_cpus
        most = user.max_cpus if given(ctx, "max_cpus") else sc.max_cpus
        topology = None
    scenario = Scenario(
        boot,
        most,
        user.plug if given(ctx, "plug") else sc.plug,
        user.unplug if given(ctx, "unplug") else sc.unplug,
        topology,
    )
    out = replace(
        setup,
        design=setup.design if given(ctx, "design") else sc.design,
        scenario=scenario,
        attacks=setup.attacks if given(ctx, "attack_ids") else sc.attacks,
        accel=setup.accel if given(ctx, "accel") else sc.accel,
        firmware=setup.firmware if given(ctx, "firmware") else sc.firmware,
        smi_features=setup.smi_features if given(ctx, "fw_smi_features") else sc.smi_features,
        revert=revert,
        backport=tuple(b for b in sc.backport if b not in revert),
    )
    out.system()  # validates the combination (counts, ids, a fix the firmware version lacks)
    return out


def describe_setup(setup: CheckSetup, revert: tuple[str, ...], history: str | None) -> str | None:
    """The line `check` prints about the history entry whose scenario it runs."""
    if not revert and history is None:
        return None
    first = history if history is not None else revert[0]
    sc = setup.scenario
    what = f"fix reverted: {', '.join(setup.revert)}" if setup.revert else "fix in place"
    extra = f"; QEMU 7.2 with {', '.join(setup.backport)}" if setup.backport else ""
    smi = "" if setup.smi_features is None else f"; firmware requests SMI features 0x{setup.smi_features:x}"
    return f"history entry {first}: -smp {sc.smp}, plug {sc.plug}, unplug {sc.unplug}{smi}{extra} ({what})"


# -- matrix --history -----------------------------------------------------------------------------
def refuse_with_catalog(given: list[str]) -> None:
    if given:
        raise UsageError(
            f"--history runs every catalog entry in its own scenario; {', '.join(given)} cannot be "
            "combined with it (--max-*, --workers and --json can)"
        )


def progress_line(entry_id: str, reverted: bool, res: Any, finished: int, total: int) -> str:
    what = res.verdict + (f" {res.prop}" if res.prop else "")
    side = "fix reverted" if reverted else "fix in place"
    return f"[{finished}/{total}] {entry_id} ({side}): {what} ({res.states:,} states, {res.seconds:.2f} s)"


def catalog_json(results: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            **entry_json(r.entry),
            "rediscovered": r.rediscovered,
            "fixed_holds": r.fixed_holds,
            "problems": r.problems(),
            "reverted": r.reverted.to_json(),
            "fixed": r.fixed.to_json(),
        }
        for r in results
    ]


def _verdict(res: Any) -> Text:
    style = {"holds": "bold green", "violated": "bold red"}.get(res.verdict, "bold yellow")
    t = Text(res.verdict, style=style)
    if res.prop:
        t.append(f" {res.prop}")
    figures = f"\n{res.states:,} st, {res.seconds:.1f}s"
    if res.verdict == "violated":
        figures += f", trace {len(res.schedule)}"
    t.append(figures, style="dim")
    return t


def render_catalog(results: list[Any], out: Console) -> None:
    table = Table(title="history: each fix reverted and in place", show_lines=True)
    for col in ("entry", "project, date", "fails", "fix reverted", "fix in place", ""):
        table.add_column(col, overflow="fold")
    for r in results:
        ok = Text("rediscovered", style="green")
        mark = ok if r.ok else Text("\n".join(r.problems()), style="bold red")
        row = (r.entry.id, f"{r.entry.project}\n{r.entry.date}", r.entry.prop)
        table.add_row(*row, _verdict(r.reverted), _verdict(r.fixed), mark)
    out.print(table)
    good = sum(r.ok for r in results)
    checks = [c for r in results for c in (r.reverted, r.fixed)]
    out.print(
        Text(
            f"{len(results)} entries: {good} rediscovered and holding with the fix; {len(checks)} checks, "
            f"{sum(c.states for c in checks):,} states, {sum(c.seconds for c in checks):.1f} s of checking",
            style="dim",
        )
    )


def run_catalog(limits: Any, workers: int | None, log: Callable[[str], None] | None = None) -> list[Any]:
    """Every entry, its fix reverted and in place; ``log`` gets a line per finished check."""
    from smm_hotplug.checker.history import run_history

    total = 2 * len(ENTRIES)
    finished = [0]

    def done(entry_id: str, reverted: bool, res: Any) -> None:
        finished[0] += 1
        if log is not None:
            log(progress_line(entry_id, reverted, res, finished[0], total))

    return run_history(limits=limits, workers=workers, done=done)
