"""Terminal renderings of checks and of the matrix."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm_hotplug.checker.explore import CheckResult, Finding

VERDICT_STYLE = {
    "holds": "bold green",
    "violated": "bold red",
    "incomplete": "bold yellow",
    "reached": "bold green",
    "unreachable": "bold yellow",
}
BOOT_MARK = "OS: ACPI enabled"
ACTOR_WIDTH = 6  # as in the simulator's timeline


def render_check(res: CheckResult, console: Console) -> None:
    attacks = ", ".join(res.attacks) or "none (benign)"
    console.print(
        Text(
            f"design {res.design}, firmware {res.firmware}, accel {res.accel}, attacks: {attacks}",
            style="bold",
        )
    )
    if res.reverted or res.backported:
        changes = [f"reverted: {', '.join(res.reverted)}"] if res.reverted else []
        changes += [f"backported: {', '.join(res.backported)}"] if res.backported else []
        console.print(Text(f"historical fixes {'; '.join(changes)}", style="bold"))
    if res.judged:
        line = f"properties deciding: {', '.join(res.judged)}"
        if res.accepted:
            line += f"; accepted as denial of service: {', '.join(res.accepted)}"
        console.print(Text(line, style="dim"))
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
    render_findings(res, console)
    if res.trace:
        render_trace(res, console)
    if res.stuck:
        render_stuck(res, console)
    for f in res.findings:
        if f.trace:
            render_trace(res, console, f)


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


def render_findings(res: CheckResult, console: Console) -> None:
    """Violations of the properties accepted as denial of service, each with its trace length."""
    for f in res.findings:
        line = Text("  also found, accepted under a malicious OS as denial of service: ", style="dim")
        line.append(f"{f.prop}, {len(f.schedule)} steps", style="bold yellow")
        console.print(line)
        console.print(f"    {f.detail}")
    for prop in res.undecided:
        why = (
            "a limit stopped the search"
            if res.verdict == "incomplete"
            else "the search ended at the violation"
        )
        console.print(
            Text(
                f"  {prop} (accepted as denial of service) not decided: it needs the whole space, {why}",
                style="dim",
            )
        )


def render_trace(res: CheckResult, console: Console, finding: Finding | None = None) -> None:
    """The check's trace, or with ``finding`` that finding's own shortest trace."""
    if finding is not None:
        trace, marked = finding.trace, finding.prop != "hotplug-completes"
        what = f"shortest trace of the finding {finding.prop}"
    else:
        trace = res.trace
        marked = res.verdict == "violated" and res.prop != "hotplug-completes"
        what = "shortest schedule to it" if res.verdict == "reached" else "shortest trace"
    console.print(Text(f"{what} ({len(trace)} steps):", style="bold"))
    boot_end = next((i for i, t in enumerate(trace) if BOOT_MARK in t.text), None)
    start = 0
    if boot_end is not None and boot_end > 3:
        console.print(
            Text(
                f"  {0:4d}-{boot_end - 1:<4d} firmware boot: relocation, locks, hand-off to the OS",
                style="dim",
            )
        )
        start = boot_end
    last = len(trace) - 1
    cycle_start = res.cycle_start if finding is None else None
    # A compact actor column, as wide as the CPUs, management and DMA need; an adversary's
    # longer name (adv:<id>) takes the room it needs on its own lines.
    width = max([ACTOR_WIDTH, *(len(t.actor) for t in trace[start:] if not t.actor.startswith("adv"))])
    for i in range(start, len(trace)):
        t = trace[i]
        if i == cycle_start:
            console.print(
                Text(f"  ---- start of cycle: steps {i}-{last} repeat for ever ----", style="bold magenta")
            )
        style = "bold red" if i == last and marked else ("red" if t.actor.startswith("adv") else "")
        line = Text(f"  {i:4d} ", style="dim")
        line.append(f"{t.actor:<{width}} ", style="bold" if t.actor.startswith("adv") else "")
        line.append(t.text, style=style)
        console.print(line)


def render_stuck(res: CheckResult, console: Console) -> None:
    """The actors at the stuck end of a hotplug-completes violation and what each waits for."""
    end = "in the repeating cycle" if res.cycle_start is not None else "when nothing can move any more"
    console.print(Text(f"stuck for ever ({end}):", style="bold"))
    width = max(len(s["actor"]) for s in res.stuck)
    for s in res.stuck:
        line = Text(f"  {s['actor']:<{width}}  ", style="bold")
        line.append(s["waiting_for"])
        line.append(f"  [{s['at']}]", style="dim")
        console.print(line)


def render_matrix(results: list[CheckResult], console: Console) -> None:
    designs = list(dict.fromkeys(r.design for r in results))
    columns = list(dict.fromkeys(("none" if not r.attacks else r.attacks[0]) for r in results))
    cells = {(r.design, "none" if not r.attacks else r.attacks[0]): r for r in results}
    accels = ", ".join(dict.fromkeys(r.accel for r in results))
    table = Table(title=f"design × adversary (accel {accels})", show_lines=True)
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
            for f in r.findings:
                t.append(f"\n+ DoS {f.prop} ({len(f.schedule)})", style="yellow")
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
