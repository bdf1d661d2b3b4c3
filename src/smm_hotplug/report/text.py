"""Terminal and JSON renderings of a simulation."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm_hotplug.hw.trace import Event
from smm_hotplug.simulator import SimResult, StepRecord, cpu_summary

KIND_STYLE = {
    "smi": "bold magenta",
    "rsm": "bold magenta",
    "mgmt": "bold cyan",
    "os": "green",
    "fw": "yellow",
    "hw": "blue",
    "ipi": "cyan",
    "qmp": "bold blue",
    "cpu": "white",
    "violation": "bold red",
    "io": "dim",
    "mem": "dim",
    "adv": "bold red",
}


def render_timeline(res: SimResult, console: Console, verbose: bool = False) -> None:
    sys_ = res.system
    sc = sys_.scenario
    console.print(
        Text(
            f"smm-hotplug simulate: design {sys_.design.id}, firmware {sys_.design.fw.version}, "
            f"{sc.boot_cpus} boot CPUs, max {sc.max_cpus}"
            + (f" ({sc.topology.spec()})" if sc.topology is not None else "")
            + f", plug {sc.plug}, unplug {sc.unplug}"
            + (f", seed {res.seed}" if res.seed is not None else "")
            + (f"; fixes reverted: {', '.join(sys_.design.reverted)}" if sys_.design.reverted else "")
            + (f"; backported: {', '.join(sys_.design.backported)}" if sys_.design.backported else ""),
            style="bold",
        )
    )
    runs = res.violation_runs()
    for st, ev in timeline_events(res, verbose):
        line = Text(f"{st.index:5d} ", style="dim")
        line.append(f"{ev.actor:<6} ", style="bold" if not ev.detail else "dim")
        line.append(ev.text, style=KIND_STYLE.get(ev.kind, ""))
        if ev.kind == "violation":
            line.append(f" ({violation_note(res, ev.actor, runs[(ev.actor, ev.text)])})", style="dim")
        console.print(line)
    console.print(Text(f"outcome: {res.outcome} after {len(res.steps)} steps", style="bold"))


def timeline_events(res: SimResult, verbose: bool = False) -> list[tuple[StepRecord, Event]]:
    """The events to show, in order: register-level detail only when ``verbose``, and each distinct
    violation once, at the step it first appears (see SimResult.violation_runs)."""
    seen: set[tuple[str, str]] = set()
    out = []
    for st in res.steps:
        for ev in st.events:
            if ev.detail and not verbose:
                continue
            if ev.kind == "violation":
                if (ev.actor, ev.text) in seen:
                    continue
                seen.add((ev.actor, ev.text))
            out.append((st, ev))
    return out


def spans_text(spans: list[tuple[int, int]]) -> str:
    """ "step 7" or "steps 144-145, 151" for runs of steps."""
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in spans]
    one = len(spans) == 1 and spans[0][0] == spans[0][1]
    return ("step " if one else "steps ") + ", ".join(parts)


def violation_note(res: SimResult, prop: str, spans: list[tuple[int, int]]) -> str:
    note = f"violated in {spans_text(spans)}"
    if res.judged is not None and prop not in res.judged:
        note += "; not judged by the recorded run"
    return note


def render_summary(res: SimResult, console: Console) -> None:
    table = Table(title="CPUs", show_lines=False)
    for col in ("slot", "APIC ID", "SMBASE", "TSEG tile", "state", "firmware slot", "OS online"):
        table.add_column(col)
    for row in cpu_summary(res.system, res.final):
        if not row["present"]:
            table.add_row(str(row["slot"]), str(row["apic_id"]), "-", "-", "absent", "-", "-")
            continue
        table.add_row(
            str(row["slot"]),
            str(row["apic_id"]),
            f"0x{row['smbase']:x}",
            "-" if row["tile"] is None else str(row["tile"]),
            row["state"],
            "-" if row["firmware_slot"] is None else str(row["firmware_slot"]),
            "yes" if row["os_online"] else "no",
        )
    console.print(table)
    inv = Table(title="Invariants")
    inv.add_column("property")
    inv.add_column("status")
    inv.add_column("first violation")
    for prop, st in res.property_status().items():
        style = {"holds": "green", "violated": "bold red"}.get(st["status"], "dim")
        first = "" if st["first"] is None else f"step {st['first']['step']}: {st['first']['text']}"
        inv.add_row(prop, Text(st["status"], style=style), first)
    console.print(inv)


def simulation_json(res: SimResult, verbose: bool = False) -> dict[str, Any]:
    sys_ = res.system
    sc = sys_.scenario
    return {
        "design": sys_.design.id,
        "firmware": sys_.design.fw.version,
        "accel": sys_.cfg.hw.accel,
        "reverted": list(sys_.design.reverted),
        "backported": list(sys_.design.backported),
        "scenario": {
            "boot_cpus": sc.boot_cpus,
            "max_cpus": sc.max_cpus,
            "plug": sc.plug,
            "unplug": sc.unplug,
            "smp": sc.smp,
        },
        "seed": res.seed,
        "outcome": res.outcome,
        "steps": len(res.steps),
        "timeline": [
            {"step": st.index, "actor": ev.actor, "kind": ev.kind, "text": ev.text}
            for st, ev in timeline_events(res, verbose)
        ],
        "violations": [
            {
                "property": prop,
                "text": text,
                "steps": [list(span) for span in spans],
                "judged": res.judged is None or prop in res.judged,
            }
            for (prop, text), spans in res.violation_runs().items()
        ],
        "schedule": [[st.actor, st.choice] for st in res.steps],
        "cpus": cpu_summary(sys_, res.final),
        "invariants": res.property_status(),
    }
