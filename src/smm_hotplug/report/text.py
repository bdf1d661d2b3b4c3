"""Terminal and JSON renderings of a simulation."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from smm_hotplug.simulator import SimResult, cpu_summary

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
            f"smm-hotplug simulate: design {sys_.design.id}, {sc.boot_cpus} boot CPUs, max {sc.max_cpus}, "
            f"plug {sc.plug}, unplug {sc.unplug}" + (f", seed {res.seed}" if res.seed is not None else ""),
            style="bold",
        )
    )
    for st in res.steps:
        for ev in st.events:
            if ev.detail and not verbose:
                continue
            line = Text(f"{st.index:5d} ", style="dim")
            line.append(f"{ev.actor:<6} ", style="bold" if not ev.detail else "dim")
            line.append(ev.text, style=KIND_STYLE.get(ev.kind, ""))
            console.print(line)
    console.print(Text(f"outcome: {res.outcome} after {len(res.steps)} steps", style="bold"))


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
        style = "green" if st["status"] == "holds" else "bold red"
        first = "" if st["first"] is None else f"step {st['first']['step']}: {st['first']['text']}"
        inv.add_row(prop, Text(st["status"], style=style), first)
    console.print(inv)


def simulation_json(res: SimResult, verbose: bool = False) -> dict[str, Any]:
    sys_ = res.system
    sc = sys_.scenario
    return {
        "design": sys_.design.id,
        "accel": sys_.cfg.hw.accel,
        "scenario": {
            "boot_cpus": sc.boot_cpus,
            "max_cpus": sc.max_cpus,
            "plug": sc.plug,
            "unplug": sc.unplug,
        },
        "seed": res.seed,
        "outcome": res.outcome,
        "steps": len(res.steps),
        "timeline": [
            {"step": st.index, "actor": ev.actor, "kind": ev.kind, "text": ev.text}
            for st in res.steps
            for ev in st.events
            if verbose or not ev.detail
        ],
        "schedule": [[st.actor, st.choice] for st in res.steps],
        "cpus": cpu_summary(sys_, res.final),
        "invariants": res.property_status(),
    }
