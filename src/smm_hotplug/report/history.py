"""The history section of the HTML report: each catalog entry (designs/history.py) with its fix
reverted — violated, its shortest trace as a sequence diagram — and with it in place — holds."""

from __future__ import annotations

from dataclasses import replace
from html import escape
from typing import Any

from smm_hotplug.checker.history import EntryResult, entry_setup
from smm_hotplug.report.html import Section, trace_section


def anchor(entry_id: str) -> str:
    return f"history-{entry_id}"


def _cell(res: Any, link: str | None = None) -> str:
    verdict = escape(res.verdict) + (f"<br>{escape(res.prop)}" if res.prop else "")
    if link:
        verdict = f'<a href="#{escape(link)}">{verdict}</a>'
    fig = f"{res.states:,} states, {res.seconds:.2f} s" + (
        f", trace {len(res.schedule)}" if res.verdict == "violated" else ""
    )
    return f'<td class="{escape(res.verdict)}">{verdict}<span class="fig">{fig}</span></td>'


def history_table(results: list[EntryResult]) -> str:
    """One row per entry: what it is, the property, and both verdicts (the reverted one links to
    its diagram)."""
    rows = []
    for r in results:
        e = r.entry
        status = "rediscovered" if r.ok else "; ".join(r.problems())
        rows.append(
            f'<tr><th title="{escape(e.race)}">{escape(e.id)}</th><td>{escape(e.project)}, '
            f"{escape(e.date)}<br>{escape(e.title)}</td><td>{escape(e.prop)}</td>"
            f"<td>{escape(e.scenario.describe())}</td>"
            f"{_cell(r.reverted, anchor(e.id) if r.reverted.verdict == 'violated' else None)}"
            f"{_cell(r.fixed)}<td>{escape(status)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("entry", "project, date, title", "fails", "scenario", "fix reverted", "fix in place", "")
    )
    accels = ", ".join(dict.fromkeys(c.accel for r in results for c in (r.reverted, r.fixed)))
    return (
        "<h2>History: real QEMU and edk2 bugs, rediscovered</h2>"
        "<p class=\"sub\">Each entry is a fix from QEMU's or edk2's history, modelled as an option of the "
        "step it changed; its scenario is checked with the fix reverted (the entry's property must be "
        "violated) and with it in place (the same scenario must hold), under the accelerator its "
        f"scenario names ({escape(accels)}), whichever the matrix uses. Hover an id for its race.</p>"
        f'<table class="matrix" id="history"><tr>{head}</tr>{"".join(rows)}</table>'
    )


def history_sections(results: list[EntryResult]) -> list[Section]:
    """The shortest trace of each entry with its fix reverted, as a sequence diagram."""
    out = []
    for r in results:
        if r.reverted.verdict != "violated":
            continue
        e = r.entry
        system = entry_setup(e, reverted=True).system()
        sec = trace_section(system, r.reverted, anchor(e.id))
        fixed = r.fixed.verdict + (f" ({r.fixed.prop})" if r.fixed.prop else "")
        out.append(
            replace(
                sec,
                heading=f"history {e.id}, fix reverted: {r.reverted.prop}",
                text=f"{e.project} {e.date}, “{e.title}”. {e.race} Scenario: {e.scenario.describe()}. "
                f"{sec.text} With the fix in place the same scenario: {fixed}, "
                f"{r.fixed.states:,} states.",
            )
        )
    return out
