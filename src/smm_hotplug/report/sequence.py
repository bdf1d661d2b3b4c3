"""Sequence diagrams (SVG) of a run: who talked to whom, step by step.

Lifelines: the VMM (management), the chipset (devices and memory), every CPU, the firmware and
the guest OS (what the software running on the CPUs says it does) and a DMA device.  Arrows are
register accesses, memory accesses (coloured by who wrote), IPIs, SMI entries and RSMs (SMBASE
before → after); adversary steps are drawn in red and the step where a property breaks is
highlighted.  A run that hangs ends with a note on each stuck actor's lifeline saying what it
waits for, and the start of a cycle that repeats for ever is marked with a band.  Runs of
register or memory accesses between the same two lifelines are collapsed into one arrow whose
tooltip lists them all, so long traces stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from smm_hotplug.hw.trace import Event

VMM = "VMM"
CHIPSET = "chipset"
FIRMWARE = "firmware"
GUEST = "guest OS"
DMA = "DMA device"

WRITER_COLOURS = {
    "firmware": "#1f5fbf",
    "os": "#d9822b",
    "dma": "#c0392b",
    "cpu": "#7f8c8d",
    "fw_cfg": "#16a085",
    "qtest": "#8e44ad",
}
KIND_COLOURS = {"smi": "#a0208f", "rsm": "#a0208f", "ipi": "#117a65", "io": "#34495e", "mgmt": "#0e6ba8"}
ADVERSARY = "#d62728"
CYCLE = "#8e44ad"
BAND_FILL = {ADVERSARY: "#fde2e1", CYCLE: "#f1e4f7"}
# Lifelines of the actors that are not CPUs (the chipset is everyone else's).
PARTY_LANES = {"mgmt": VMM, "qmp": VMM, "os": GUEST, "dma": DMA}

COL = 150
ROW = 24
TOP = 54
LABEL_CHARS = 44


@dataclass
class Step:
    index: int
    actor: str
    events: list[Event]


@dataclass
class Item:
    """One row of the diagram."""

    kind: str  # "arrow" | "self" | "note" | "band"
    src: str
    dst: str
    label: str
    colour: str
    step: int
    details: list[str] = field(default_factory=list)
    count: int = 1
    adversary: bool = False
    group: tuple = ()
    last_step: int = -1  # the last step folded into this row


@dataclass
class Diagram:
    svg: str
    arrows: int
    rows: int


def lifelines(cpus: int) -> list[str]:
    return [VMM, CHIPSET, *[f"cpu{i}" for i in range(cpus)], FIRMWARE, GUEST, DMA]


def _items(steps: list[Step]) -> list[Item]:
    items: list[Item] = []
    for st in steps:
        adv = st.actor.startswith("adv:")
        for ev in st.events:
            it = _item(ev, st, adv)
            if it is None:
                continue
            last = items[-1] if items else None
            if (
                last is not None
                and it.group
                and last.group == it.group
                and max(last.step, last.last_step) + 8 >= it.step
                and last.adversary == it.adversary
            ):
                last.count += 1
                last.last_step = st.index
                last.details.append(f"step {st.index}: {ev.text}")
                continue
            items.append(it)
    return items


def _item(ev: Event, st: Step, adv: bool) -> Item | None:
    actor = ev.actor
    src = actor if actor.startswith("cpu") else PARTY_LANES.get(actor, CHIPSET)
    red = ADVERSARY if adv else None
    text = ev.text
    detail = [f"step {st.index}: {text}"]
    if ev.kind == "violation":
        return Item("band", CHIPSET, CHIPSET, f"{actor} violated: {text}", ADVERSARY, st.index, detail)
    if ev.kind == "cycle":
        return Item("band", CHIPSET, CHIPSET, text, CYCLE, st.index, detail)
    if ev.kind == "stuck":
        lane = actor if actor.startswith("cpu") else PARTY_LANES.get(actor, CHIPSET)
        return Item("note", lane, lane, f"stuck: {text}", ADVERSARY, st.index, detail)
    if ev.kind == "adv":
        who = DMA if "dma" in actor else GUEST
        return Item("note", who, who, text, ADVERSARY, st.index, detail, adversary=True)
    if ev.kind == "mgmt":
        return Item("arrow", VMM, CHIPSET, text, KIND_COLOURS["mgmt"], st.index, detail)
    if ev.kind == "qmp":
        return Item("note", VMM, VMM, text, KIND_COLOURS["mgmt"], st.index, detail)
    if ev.kind == "smi" and ev.data:
        _, slot, _base = ev.data
        return Item("arrow", CHIPSET, f"cpu{slot}", text, KIND_COLOURS["smi"], st.index, detail)
    if ev.kind == "rsm" and ev.data:
        return Item("self", actor, actor, text, KIND_COLOURS["rsm"], st.index, detail)
    if ev.kind == "ipi" and ev.data:
        _, _mode, targets = ev.data
        dst = f"cpu{targets[0]}" if len(targets) == 1 else CHIPSET
        return Item("arrow", src, dst, text, red or KIND_COLOURS["ipi"], st.index, detail, adversary=adv)
    if ev.kind == "io":
        return Item(
            "arrow",
            src,
            CHIPSET,
            text,
            red or KIND_COLOURS["io"],
            st.index,
            detail,
            adversary=adv,
            group=("io", src),
        )
    if ev.kind == "mem" and ev.data:
        op, _addr, writer = ev.data
        colour = WRITER_COLOURS.get(writer, "#555") if op == "write" else "#aab7b8"
        return Item(
            "arrow",
            src,
            CHIPSET,
            text,
            red or colour,
            st.index,
            detail,
            adversary=adv,
            group=("mem", src, op, writer),
        )
    if ev.kind == "fw":
        return Item(
            "note", FIRMWARE, FIRMWARE, f"{actor}: {text}", WRITER_COLOURS["firmware"], st.index, detail
        )
    if ev.kind == "os":
        return Item("note", GUEST, GUEST, f"{actor}: {text}", WRITER_COLOURS["os"], st.index, detail)
    if ev.kind in ("hw", "cpu", "note"):
        where = actor if actor.startswith("cpu") and ev.kind == "cpu" else CHIPSET
        return Item("note", where, where, text, "#555", st.index, detail)
    return None


def _short(text: str, n: int = LABEL_CHARS) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def render(steps: list[Step], cpus: int, anchor: str = "") -> Diagram:
    lanes = lifelines(cpus)
    x = {name: 80 + i * COL for i, name in enumerate(lanes)}
    items = _items(steps)
    height = TOP + ROW * (len(items) + 1) + 20
    width = 80 + COL * len(lanes)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sequence" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" data-arrows="{{ARROWS}}" data-rows="{len(items)}"'
        + (f' id="{escape(anchor)}"' if anchor else "")
        + ' font-family="sans-serif" font-size="11">',
        "<defs>",
    ]
    colours = {it.colour for it in items} | {"#34495e"}
    for c in sorted(colours):
        cid = c.lstrip("#")
        out.append(
            f'<marker id="m{cid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
            f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>'
        )
    out.append("</defs>")
    for name in lanes:
        xx = x[name]
        out.append(
            f'<g class="lifeline"><rect x="{xx - 55}" y="8" width="110" height="24" rx="4" '
            f'fill="#eef2f7" stroke="#8795a1"/><text x="{xx}" y="24" text-anchor="middle" '
            f'font-weight="bold">{escape(name)}</text>'
            f'<line x1="{xx}" y1="32" x2="{xx}" y2="{height - 10}" stroke="#c5ccd3" '
            f'stroke-dasharray="4 3"/></g>'
        )
    arrows = 0
    for row, it in enumerate(items):
        y = TOP + ROW * row + ROW // 2
        tip = "\n".join(it.details[:60]) + (
            f"\n… {len(it.details) - 60} more" if len(it.details) > 60 else ""
        )
        label = it.label if it.count == 1 else f"{it.count}× {_short(it.label, LABEL_CHARS - 8)}"
        step_txt = f'<text x="6" y="{y + 4}" fill="#999">{it.step}</text>'
        cid = it.colour.lstrip("#")
        if it.kind == "band":
            cls = "violation" if it.colour == ADVERSARY else "cycle"
            out.append(
                f'<g class="{cls}"><rect x="0" y="{y - ROW // 2}" width="{width}" height="{ROW}" '
                f'fill="{BAND_FILL.get(it.colour, "#eee")}" stroke="{it.colour}"/>{step_txt}'
                f'<text x="{x[CHIPSET]}" y="{y + 4}" fill="{it.colour}" font-weight="bold">'
                f"{escape(_short(label, 120))}"
                f"<title>{escape(tip)}</title></text></g>"
            )
            continue
        if it.kind == "note":
            box = 7 * min(len(label), 60)
            # Notes of the right-most lifelines grow leftwards so that they stay on the page.
            left = min(x.get(it.src, x[CHIPSET]) - 4, width - box - 4)
            out.append(
                f'<g class="note">{step_txt}<rect x="{left}" y="{y - 9}" width="{box}"'
                f' height="17" rx="3" fill="#fff" stroke="{it.colour}" opacity="0.95"/>'
                f'<text x="{left + 4}" y="{y + 4}" fill="{it.colour}">{escape(_short(label, 60))}'
                f"<title>{escape(tip)}</title></text></g>"
            )
            continue
        arrows += 1
        if it.kind == "self" or it.src == it.dst:
            xx = x.get(it.src, x[CHIPSET])
            out.append(
                f'<g class="arrow" data-kind="self">{step_txt}'
                f'<path d="M{xx},{y - 6} h28 v12 h-26" fill="none" '
                f'stroke="{it.colour}" stroke-width="1.5" marker-end="url(#m{cid})"/>'
                f'<text x="{xx + 34}" y="{y + 4}" fill="{it.colour}">{escape(_short(label))}'
                f"<title>{escape(tip)}</title></text></g>"
            )
            continue
        x1, x2 = x.get(it.src, x[CHIPSET]), x.get(it.dst, x[CHIPSET])
        width_attr = "2.5" if it.adversary else "1.5"
        tx = min(x1, x2) + 6
        out.append(
            f'<g class="arrow" data-kind="{escape(it.group[0] if it.group else it.kind)}">{step_txt}'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{it.colour}" stroke-width="{width_attr}" '
            f'marker-end="url(#m{cid})"/><text x="{tx}" y="{y - 4}" fill="{it.colour}">'
            f"{escape(_short(label))}<title>{escape(tip)}</title></text></g>"
        )
    out.append("</svg>")
    svg = "\n".join(out).replace("{ARROWS}", str(arrows))
    return Diagram(svg, arrows, len(items))
