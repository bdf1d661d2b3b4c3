"""One self-contained HTML page: the design × adversary matrix and sequence diagrams.

Everything is inline (CSS, SVG, a few lines of script for zooming): the page needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from smm_hotplug.checker.explore import CheckResult, Finding
from smm_hotplug.hw.trace import Event
from smm_hotplug.report.sequence import Diagram, Step, render
from smm_hotplug.simulator import SimResult, simulate
from smm_hotplug.world import System

BOOT_DONE = "OS: ACPI enabled"

CSS = """
body { font-family: sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; } p.sub { color: #555; max-width: 70em; }
table.matrix { border-collapse: collapse; font-size: 12px; }
table.matrix th, table.matrix td { border: 1px solid #ccc; padding: 4px 6px; vertical-align: top; }
table.matrix th { background: #f4f6f8; }
td.holds { background: #e3f6e5; } td.violated { background: #fde2e1; } td.incomplete { background: #fff4d6; }
td .fig { color: #666; font-size: 11px; display: block; }
td .dos { color: #a35400; font-size: 11px; display: block; }
.diagram { border: 1px solid #ccd; overflow: auto; max-height: 78vh; margin: 8px 0 4px; background: #fff; }
.zoom button { margin-right: 4px; }
.legend span { display: inline-block; margin-right: 14px; font-size: 12px; }
.legend i { display: inline-block; width: 22px; height: 3px; vertical-align: middle; margin-right: 4px; }
"""

SCRIPT = """
document.querySelectorAll('.zoom').forEach(function (bar) {
  var box = document.getElementById(bar.dataset.target);
  var svg = box.querySelector('svg');
  var w = parseFloat(svg.getAttribute('width'));
  var h = parseFloat(svg.getAttribute('height'));
  var scale = 1;
  bar.querySelectorAll('button').forEach(function (b) {
    b.addEventListener('click', function () {
      scale = b.dataset.z === 'reset' ? 1 : Math.max(0.2, Math.min(4, scale * parseFloat(b.dataset.z)));
      svg.setAttribute('width', String(w * scale));
      svg.setAttribute('height', String(h * scale));
    });
  });
});
"""

LEGEND = [
    ("#1f5fbf", "memory written by firmware"),
    ("#d9822b", "… by the OS"),
    ("#c0392b", "… by a DMA device"),
    ("#7f8c8d", "… by the CPU (state save)"),
    ("#34495e", "register access"),
    ("#117a65", "IPI"),
    ("#a0208f", "SMI entry / RSM"),
    ("#0e6ba8", "VMM"),
    ("#d62728", "adversary"),
]


@dataclass
class Section:
    anchor: str
    heading: str
    text: str
    diagram: Diagram


def steps_of(
    res: SimResult, start: int = 0, end: int | None = None, collapse_boot: bool = True
) -> list[Step]:
    """The run's steps [start, end) as diagram input, with the firmware boot folded into one note
    and each violated property marked at the step where it breaks only."""
    records = res.steps[start:end]
    out: list[Step] = []
    boot_end = None
    if collapse_boot and start == 0:
        boot_end = next(
            (i for i, st in enumerate(records) if any(BOOT_DONE in e.text for e in st.events)), None
        )
    if boot_end:
        note = Event(
            "note",
            "chipset",
            f"firmware boot and OS start: steps 0-{boot_end - 1} folded "
            "(boot CPUs relocated, SMRAM and the default-SMBASE window locked)",
        )
        out.append(Step(0, "fw", [note]))
        records = records[boot_end:]
    broken: set[str] = set()  # a property that stays violated gets one band, where it breaks
    for st in records:
        events = [e for e in st.events if e.kind != "violation" or e.actor not in broken]
        broken |= {e.actor for e in st.events if e.kind == "violation"}
        out.append(Step(st.index, st.actor, events))
    return out


def run_diagram(
    anchor: str, heading: str, text: str, res: SimResult, start: int = 0, end: int | None = None
) -> Section:
    diagram = render(steps_of(res, start, end), res.system.cfg.max_cpus, anchor=f"svg-{anchor}")
    return Section(anchor, heading, text, diagram)


def trace_section(system: System, result: CheckResult, anchor: str) -> Section:
    """The shortest trace of a violated check, replayed with every event; a hang ends with what
    each stuck actor waits for, and the start of a repeating cycle is marked."""
    res = simulate(system, detail=True, schedule=result.schedule)
    attacks = ", ".join(result.attacks) or "no adversary"
    heading = f"{result.design} × {attacks}: {result.prop}"
    text = (
        f"{result.detail} — shortest trace, {len(result.schedule)} steps ({result.states:,} states explored)."
    )
    steps = steps_of(res)
    if result.stuck:
        steps = _with_stuck_end(steps, result)
    diagram = render(steps, res.system.cfg.max_cpus, anchor=f"svg-{anchor}")
    return Section(anchor, heading, text, diagram)


def _with_stuck_end(steps: list[Step], result: CheckResult) -> list[Step]:
    """A hotplug-completes trace: a band where the cycle that repeats for ever starts, and at the
    end a note on each stuck actor's lifeline."""
    out = list(steps)
    end = len(result.schedule)
    if result.cycle_start is not None:
        first = result.cycle_start
        band = Event("cycle", "checker", f"start of cycle: steps {first}-{end - 1} repeat for ever")
        at = next((i for i, st in enumerate(out) if st.index >= first), len(out))
        out.insert(at, Step(first, "checker", [band]))
    how = "in the repeating cycle" if result.cycle_start is not None else "no actor can move"
    events = [Event("violation", "hotplug-completes", f"stuck for ever ({how})")]
    events += [Event("stuck", s["actor"], s["waiting_for"]) for s in result.stuck]
    out.append(Step(end, "checker", events))
    return out


def finding_section(system: System, result: CheckResult, finding: Finding, anchor: str) -> Section:
    """The shortest trace of a finding: a violation accepted as denial of service."""
    res = simulate(system, detail=True, schedule=finding.schedule)
    attacks = ", ".join(result.attacks) or "no adversary"
    heading = f"{result.design} × {attacks}: {finding.prop} (accepted as denial of service)"
    text = (
        f"{finding.detail} — accepted under a malicious OS as denial of service, so it does not decide the "
        f"verdict ({result.verdict}); its shortest trace, {len(finding.schedule)} steps."
    )
    return run_diagram(anchor, heading, text, res)


def finding_anchor(design: str, column: str, prop: str, accel: str = "") -> str:
    """The section of a finding; ``accel`` qualifies it on a page with a matrix per accelerator."""
    return f"finding-{accel + '-' if accel else ''}{design}-{column}-{prop}"


def benign_sections(system: System) -> list[Section]:
    """The shipped design's benign hot-add and hot-remove, as two diagrams."""
    res = simulate(system, seed=0, detail=True)
    first_plug = next(
        (i for i, st in enumerate(res.steps) if any("device_add" in e.text for e in st.events)), 0
    )
    first_unplug = next(
        (i for i, st in enumerate(res.steps) if any("device_del" in e.text for e in st.events)),
        len(res.steps),
    )
    sections = [
        run_diagram(
            "benign-hot-add",
            f"{system.design.id}: hot-add",
            "Management plugs CPUs; the OS raises the hotplug SMI; the monarch relocates each new CPU "
            "behind the gate into its own TSEG tile and pens it; the OS brings it online.",
            res,
            first_plug,
            first_unplug,
        ),
    ]
    if first_unplug < len(res.steps):
        sections.append(
            run_diagram(
                "benign-hot-remove",
                f"{system.design.id}: hot-remove",
                "Management requests an unplug; the OS offlines the CPU and runs _EJ0 (fw-remove + SMI); the "
                "monarch drops it from its table; the CPU parks in SMM and the monarch ejects it.",
                res,
                first_unplug,
            )
        )
    return sections


def matrix_table(
    results: list[CheckResult],
    anchors: dict[tuple[str, str], str],
    linked_findings: bool = False,
    accel: str = "",
) -> str:
    """The matrix; ``anchors``: the section of each violated cell's trace; with ``linked_findings``
    each finding's mark links to its section (``finding_anchor``).  ``accel`` names the
    accelerator on a page with a matrix per accelerator (table id ``matrix-ACCEL``)."""
    table_id = escape(f"matrix-{accel}" if accel else "matrix")
    designs = list(dict.fromkeys(r.design for r in results))
    columns = list(dict.fromkeys(("none" if not r.attacks else r.attacks[0]) for r in results))
    cells = {(r.design, "none" if not r.attacks else r.attacks[0]): r for r in results}
    head = "".join(f"<th>{escape(d)}</th>" for d in designs)
    rows = []
    for col in columns:
        tds = []
        for d in designs:
            r = cells.get((d, col))
            if r is None:
                tds.append("<td></td>")
                continue
            verdict = escape(r.verdict)
            prop = f"<br>{escape(r.prop)}" if r.prop else ""
            link = anchors.get((d, col))
            if link:
                verdict = f'<a href="#{link}">{verdict}</a>'
            fig = f"{r.states:,} states, {r.seconds:.2f} s" + (
                f", trace {len(r.schedule)}" if r.schedule else ""
            )
            if r.bound is not None:
                fig += f", no violation within {r.bound} steps"
            reached = [c for c, n in r.cases.items() if n is not None]
            cases = (
                f'<span class="fig" title="hard cases reached: {escape(", ".join(reached) or "none")}">'
                f"{len(reached)}/{len(r.cases)} hard cases</span>"
                if r.cases
                else ""
            )
            marks = []
            for f in r.findings:
                mark = f"+ DoS {escape(f.prop)} ({len(f.schedule)})"
                if linked_findings:
                    mark = f'<a href="#{escape(finding_anchor(d, col, f.prop, accel))}">{mark}</a>'
                tip = escape(f"accepted under a malicious OS as denial of service: {f.detail}")
                marks.append(f'<span class="dos" title="{tip}">{mark}</span>')
            tds.append(
                f'<td class="{escape(r.verdict)}">{verdict}{prop}<span class="fig">{fig}</span>{cases}'
                f"{''.join(marks)}</td>"
            )
        rows.append(f"<tr><th>{escape(col)}</th>{''.join(tds)}</tr>")
    return (
        f'<table class="matrix" id="{table_id}"><tr><th>adversary \\ design</th>{head}</tr>'
        f"{''.join(rows)}</table>"
    )


def page(title: str, intro: str, sections: list[Section], matrix_html: str = "", extra_html: str = "") -> str:
    """The page: title, intro, the matrix (if any), ``extra_html`` (e.g. the history table, with
    its own heading), then the sections."""
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(t)}</span>' for c, t in LEGEND)
    body = [f"<h1>{escape(title)}</h1>", f'<p class="sub">{escape(intro)}</p>']
    if matrix_html:
        body += ["<h2>Design × adversary</h2>", matrix_html]
    if extra_html:
        body.append(extra_html)
    if sections:
        body.append(f'<p class="legend">{legend}</p>')
    for sec in sections:
        body += [
            f'<h2 id="{escape(sec.anchor)}">{escape(sec.heading)}</h2>',
            f'<p class="sub">{escape(sec.text)} Hover an arrow for the accesses it stands for.</p>',
            f'<div class="zoom" data-target="box-{escape(sec.anchor)}"><button data-z="1.25">zoom in</button>'
            f'<button data-z="0.8">zoom out</button><button data-z="reset">reset</button></div>',
            f'<div class="diagram" id="box-{escape(sec.anchor)}">{sec.diagram.svg}</div>',
        ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        + "\n".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )
