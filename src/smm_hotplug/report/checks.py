"""Terminal renderings of checks and of the matrix."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm_hotplug.checker.explore import CheckResult

VERDICT_STYLE = {
    "holds": "bold green",
    "violated": "bold red",
    "incomplete": "bold yellow",
    "reached": "bold green",
    "unreachable": "bold yellow",
}
BOOT_MARK = "OS: ACPI enabled"


def render_check(res: CheckResult, console: Console) -> None:
    attacks = ", ".join(res.attacks) or "none (benign)"
    console.print(Text(f"design {res.design}, attacks: {attacks}", style="bold"))
    if res.judged:
        console.print(Text(f"properties judged: {', '.join(res.judged)}", style="dim"))
    verdict = Text(res.verdict.upper(), style=VERDICT_STYLE.get(res.verdict, ""))
    if res.prop:
        verdict.append(f"  {res.prop}", style="bold")
    console.print(verdict)
    if res.detail:
        console.print(f"  {res.detail}")
    console.print(
        f"  {res.states:,} states, {res.transitions:,} transitions, depth {res.depth}, {res.seconds:.2f} s"
    )
    if res.stats.get("fingerprint"):
        spacing = res.stats.get("fingerprint_spacing_probability")
        console.print(
            "  fingerprints: probability that two distinct states had the same one: calculated "
            f"(optimistic) {res.collision_probability:.1e}"
            + (f", based on the actual fingerprints {spacing:.1e}" if spacing is not None else "")
        )
    render_cases(res, console)
    if res.trace:
        render_trace(res, console)


def cases_reached(res: CheckResult) -> list[str]:
    """ "case (N steps)" for every hard case the check reached."""
    return [f"{case} ({steps} steps)" for case, steps in res.cases.items() if steps is not None]


def render_cases(res: CheckResult, console: Console) -> None:
    """Which hard cases the exploration went through (see checker.cases)."""
    if not res.cases:
        return
    seen = cases_reached(res)
    unseen = [case for case, steps in res.cases.items() if steps is None]
    line = Text("  hard cases reached: ", style="dim")
    line.append(", ".join(seen) or "none")
    if unseen:
        why = {
            "holds": "unreachable here",
            "unreachable": "unreachable here",
            "violated": "not reached before the violation",
        }
        line.append(f"; {why.get(res.verdict, 'not reached so far')}: ", style="dim")
        line.append(", ".join(unseen))
    console.print(line)


def render_trace(res: CheckResult, console: Console) -> None:
    what = "shortest schedule to it" if res.verdict == "reached" else "shortest trace"
    console.print(Text(f"{what} ({len(res.trace)} steps):", style="bold"))
    boot_end = next((i for i, t in enumerate(res.trace) if BOOT_MARK in t.text), None)
    start = 0
    if boot_end is not None and boot_end > 3:
        console.print(
            Text(
                f"  {0:4d}-{boot_end - 1:<4d} firmware boot: relocation, locks, hand-off to the OS",
                style="dim",
            )
        )
        start = boot_end
    last = len(res.trace) - 1
    for i in range(start, len(res.trace)):
        t = res.trace[i]
        style = (
            "bold red"
            if i == last and res.verdict == "violated" and res.prop != "hotplug-completes"
            else ("red" if t.actor.startswith("adv") else "")
        )
        line = Text(f"  {i:4d} ", style="dim")
        line.append(f"{t.actor:<34} ", style="bold" if t.actor.startswith("adv") else "")
        line.append(t.text, style=style)
        console.print(line)


def render_matrix(results: list[CheckResult], console: Console) -> None:
    designs = list(dict.fromkeys(r.design for r in results))
    columns = list(dict.fromkeys(("none" if not r.attacks else r.attacks[0]) for r in results))
    cells = {(r.design, "none" if not r.attacks else r.attacks[0]): r for r in results}
    table = Table(title="design × adversary", show_lines=True)
    table.add_column("adversary")
    for d in designs:
        table.add_column(d, overflow="fold")
    for col in columns:
        row: list[Text | str] = [col]
        for d in designs:
            r = cells.get((d, col))
            if r is None:
                row.append("")
                continue
            t = Text(r.verdict, style=VERDICT_STYLE.get(r.verdict, ""))
            if r.prop:
                t.append(f"\n{r.prop}")
            figures = f"\n{r.states:,} st, {r.seconds:.1f}s"
            if r.verdict == "violated":
                figures += f", trace {r.depth}"
            elif r.bound is not None:
                figures += f", clean to {r.bound} steps"
            t.append(figures, style="dim")
            row.append(t)
        table.add_row(*row)
    console.print(table)
    total = sum(r.seconds for r in results)
    console.print(
        Text(
            f"{len(results)} checks, {sum(r.states for r in results):,} states, {total:.1f} s of checking",
            style="dim",
        )
    )
