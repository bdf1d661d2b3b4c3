"""Every property judged in every check: violations of the properties accepted as denial of
service are findings with their own shortest trace; only the deciding properties set the verdict."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli as run

from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.invariants import PROPERTIES
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario

SHIPPED = "smram-default-smbase"
# The example: a CPU the OS started early and one plugged at any moment can both be in
# SMM at once on the reset SMBASE's save-state area.
EARLY_AND_CONCURRENT = ("os-early-init-sipi", "concurrent-plug")


@pytest.fixture(scope="module")
def early_and_concurrent():
    return run_check(CheckSetup(SHIPPED, Scenario(), EARLY_AND_CONCURRENT))


def test_a_finding_does_not_decide_the_verdict_but_is_reported_with_its_shortest_trace(early_and_concurrent):
    res = early_and_concurrent
    assert res.verdict == "holds" and res.prop is None
    assert res.judged == ("smm-code-integrity", "smram-isolation")
    assert set(res.accepted) == {
        "smbase-in-tseg",
        "save-state-exclusive",
        "eject-safe",
        "firmware-table-consistent",
        "hotplug-completes",
    }
    found = {f.prop: f for f in res.findings}
    sse = found["save-state-exclusive"]
    assert sse.kind == "denial-of-service"
    assert "0x3fc00 and 0x3fc00" in sse.detail
    assert len(sse.trace) == len(sse.schedule)
    assert "VIOLATION save-state-exclusive" in sse.trace[-1].text


def test_a_finding_is_recorded_at_its_first_occurrence(early_and_concurrent):
    """Breadth first: the finding's schedule violates the property at its last step and nowhere
    before, and a search bounded one step short does not find it."""
    system = CheckSetup(SHIPPED, Scenario(), EARLY_AND_CONCURRENT).system()
    for f in early_and_concurrent.findings:
        if f.prop == "hotplug-completes":
            continue
        run_ = simulate(system, schedule=f.schedule)
        hits = [i for i, v in run_.violations if v.prop == f.prop]
        assert hits and hits[0] == len(f.schedule) - 1, f.prop
        short = run_check(
            CheckSetup(SHIPPED, Scenario(), EARLY_AND_CONCURRENT),
            limits=Limits(depth=len(f.schedule) - 1),
            describe=False,
        )
        assert f.prop not in {g.prop for g in short.findings}


def test_hotplug_completes_as_a_finding_needs_the_whole_space(early_and_concurrent):
    found = {f.prop: f for f in early_and_concurrent.findings}
    assert found["hotplug-completes"].detail.startswith(("deadlock:", "livelock:"))
    assert early_and_concurrent.undecided == ()
    stopped = run_check(CheckSetup(SHIPPED, Scenario(), EARLY_AND_CONCURRENT), limits=Limits(states=2_000))
    assert stopped.verdict == "incomplete"
    assert "hotplug-completes" not in {f.prop for f in stopped.findings}
    assert stopped.undecided == ("hotplug-completes",)
    assert stopped.to_json()["undecided"] == ["hotplug-completes"]


def test_the_benign_flow_judges_every_property_as_deciding():
    res = run_check(CheckSetup(SHIPPED, Scenario(1, 2, 1, 0)))
    assert res.verdict == "holds" and res.accepted == () and res.findings == []
    assert set(res.judged) == set(PROPERTIES)


def test_check_prints_and_exports_findings_and_exits_by_the_deciding_properties(tmp_path):
    args = ["check", *(a for x in EARLY_AND_CONCURRENT for a in ("--attack", x))]
    out = run(*args)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "HOLDS" in text
    assert "also found, accepted under a malicious OS as denial of service: save-state-exclusive," in text
    assert "shortest trace of the finding save-state-exclusive" in text

    doc = json.loads(run(*args, "--json").stdout)
    assert doc["verdict"] == "holds"
    sse = next(f for f in doc["findings"] if f["property"] == "save-state-exclusive")
    assert sse["kind"] == "denial-of-service" and "0x3fc00" in sse["detail"]
    assert len(sse["trace"]) == sse["steps"] and sse["trace"][-1]["description"]

    page = tmp_path / "check.html"
    assert run(*args, "--html", str(page)).returncode == 0
    html = page.read_text()
    anchor = f"finding-{SHIPPED}-{'+'.join(EARLY_AND_CONCURRENT)}-save-state-exclusive"
    assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    assert "+ DoS save-state-exclusive" in html
    # A property that stays violated is one band, where it breaks (as in the text trace).
    bands = sum(step["description"].count("VIOLATION ") for f in doc["findings"] for step in f["trace"])
    assert html.count('<g class="violation">') == bands


def test_a_deciding_violation_leaves_the_accepted_liveness_property_undecided():
    res = run_check(CheckSetup("sdm", Scenario(), ("os-code-at-default-smbase",)))
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    assert res.undecided == ("hotplug-completes",)


def test_a_matrix_cell_marks_its_findings(early_and_concurrent):
    from rich.console import Console

    from smm_hotplug.report.checks import render_matrix
    from smm_hotplug.report.html import matrix_table

    console = Console(record=True, width=200)
    render_matrix([early_and_concurrent], console)
    steps = next(len(f.schedule) for f in early_and_concurrent.findings if f.prop == "save-state-exclusive")
    assert f"+ DoS save-state-exclusive ({steps})" in console.export_text()
    html = matrix_table([early_and_concurrent], {})
    assert "+ DoS save-state-exclusive" in html and "href=" not in html  # no sections: no links


def test_the_report_links_each_finding_to_its_trace(tmp_path):
    from smm_hotplug.report.html import finding_anchor

    page = tmp_path / "report.html"
    out = run(
        "report", "-o", str(page), "--design", SHIPPED, "--attack", "os-early-init-sipi", "--no-history"
    )
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    doc = json.loads(run("check", "--attack", "os-early-init-sipi", "--json").stdout)
    assert doc["findings"]
    for f in doc["findings"]:
        anchor = finding_anchor(SHIPPED, "os-early-init-sipi", f["property"])
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    assert f"{len(doc['findings']) + 2} diagrams" in out.stdout  # the findings + benign hot-add/remove
