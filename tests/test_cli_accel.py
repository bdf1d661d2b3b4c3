"""The accelerator profiles and the general IPI attacker from the command line, and what they find."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli as run

from smm_hotplug.adversaries.catalog import ADVERSARIES, resolve
from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.firmware import layout as FW
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario

SMALL = ["--boot-cpus", "1", "--max-cpus", "2", "--plug", "1", "--unplug", "0"]
TINY = Scenario(1, 2, 1, 0)


def test_ovmf_relocation_cannot_complete_under_tcg(tmp_path):
    """The finding: under TCG's rules the monarch's INIT resets the new CPU out of SMM (or drops its
    SMI), the SIPI starts it in the pen outside SMM, and the monarch waits for AboutToLeaveSmm
    forever; under KVM's the same design holds."""
    trace = tmp_path / "tcg.json"
    out = run("check", *SMALL, "--accel", "tcg", "--json", "--trace-out", str(trace))
    assert out.returncode == 1, out.stderr
    res = json.loads(out.stdout)
    assert (res["accel"], res["verdict"], res["property"]) == ("tcg", "violated", "hotplug-completes")
    text = [t["description"] for t in res["trace"]]
    assert any("relocating APIC ID 1" in t for t in text)
    assert any(f"SIPI: starts at 0x{FW.post_smm_pen_page():05x}" in t for t in text)
    assert json.loads(trace.read_text())["options"]["accel"] == "tcg"
    replay = run("simulate", "--replay", str(trace))  # the same run, step by step, under TCG
    assert f"SIPI: starts at 0x{FW.post_smm_pen_page():05x}" in replay.stdout
    kvm = run("check", *SMALL, "--json")
    assert kvm.returncode == 0 and json.loads(kvm.stdout)["accel"] == "kvm"


def test_os_ipi_is_in_all_and_its_budget_can_be_changed():
    assert ADVERSARIES["os-ipi"] in resolve(["all"])
    assert ADVERSARIES["os-ipi"].budget == 3
    (adv,) = resolve(["os-ipi"], {"os-ipi": 1})
    assert adv.budget == 1
    one = run_check(CheckSetup("smram-default-smbase", TINY, ("os-early-smi",)), limits=Limits(states=50_000))
    two = run_check(
        CheckSetup("smram-default-smbase", TINY, ("os-early-smi",), budgets=(("os-early-smi", 2),)),
        limits=Limits(states=50_000),
    )
    assert one.verdict == two.verdict == "holds" and two.states > one.states


def test_os_ipi_starts_a_new_cpu_in_the_smbase_msr_trampoline_before_its_mailbox_is_set():
    """A SIPI into firmware code the OS may name: the trampoline writes SMBASE 0 from the empty
    mailbox, and the OS's SMI then runs the CPU in SMM at 0x8000 — memory the OS owns."""
    out = run(
        "check", *SMALL, "--design", "smbase-msr", "--attack", "os-ipi", "--budget", "os-ipi=3", "--json"
    )
    res = json.loads(out.stdout)
    assert (res["verdict"], res["property"]) == ("violated", "smm-code-integrity")
    text = " ".join(t["description"] for t in res["trace"])
    assert "fw.msr_trampoline" in text and "WRMSR SMBASE <- 0x0" in text and "executes at 0x8000" in text


def test_os_ipi_choices():
    """Destinations, modes and SIPI vectors offered once the OS runs and a plugged CPU waits."""
    system = CheckSetup("smram-default-smbase", Scenario(2, 3, 1, 0), ("os-ipi",)).system()
    benign = CheckSetup("smram-default-smbase", Scenario(2, 3, 1, 0)).system()
    plugged = next(st.index for st in simulate(benign, seed=0).steps if st.actor == "mgmt")
    w = simulate(benign, seed=0, step_limit=plugged + 1).final
    w = w._replace(budgets=system.initial().budgets)
    descs = [d for d, _ in ADVERSARIES["os-ipi"].actions(system, w)]
    # every present CPU and all-but-self from each OS CPU (three CPUs are present)
    for dest in ("cpu0", "cpu1", "cpu2", "all but cpu0", "all but cpu1"):
        assert (
            f"the OS sends an INIT IPI to {dest}" in descs and f"the OS sends an SMI IPI to {dest}" in descs
        )
    # NMIs only where the OS does not run: the new CPU (and the broadcasts that reach it)
    assert [d for d in descs if "NMI" in d] == [
        "the OS sends an NMI IPI to cpu2",
        "the OS sends an NMI IPI to all but cpu0",
        "the OS sends an NMI IPI to all but cpu1",
    ]
    # SIPIs only to where one can start a CPU: the new CPU waits for one (directly or broadcast)
    sipis = [d for d in descs if "SIPI" in d]
    assert "the OS sends a SIPI to cpu2, vector 0x0a (its own code)" in sipis
    assert f"the OS sends a SIPI to cpu2, vector 0x{FW.post_smm_pen_page() >> 12:02x} (fw.pen)" in sipis
    assert not any("to cpu0" in d or "to cpu1" in d for d in sipis)


def test_simulate_runs_with_adversaries_and_budgets():
    out = run("simulate", *SMALL, "--attack", "os-ipi", "--budget", "os-ipi=2", "--seed", "3", "--json")
    assert out.returncode in (0, 1), out.stderr
    doc = json.loads(out.stdout)
    assert doc["accel"] == "kvm"
    assert len([s for s in doc["schedule"] if s[0] == "adv:os-ipi"]) <= 2


def test_matrix_under_tcg(tmp_path):
    out = run("matrix", *SMALL, "--accel", "tcg", "--json", "--max-states", "2000", "--workers", "2")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert {c["accel"] for c in cells} == {"tcg"}
    by = {(c["design"], tuple(c["attacks"])): c for c in cells}
    assert (by[("smram-default-smbase", ())]["verdict"], by[("smram-default-smbase", ())]["property"]) == (
        "violated",
        "hotplug-completes",
    )


def test_report_shows_both_profiles(tmp_path):
    page = tmp_path / "r.html"
    out = run(
        "report",
        *SMALL,
        "-o",
        str(page),
        "--accel",
        "kvm",
        "--accel",
        "tcg",
        "--design",
        "smram-default-smbase",
        "--attack",
        "none",
        "--max-states",
        "2000",
        "--no-history",  # the history section: tests/test_history.py
    )
    assert out.returncode == 0, out.stderr
    html = page.read_text()
    assert 'id="matrix-kvm"' in html and 'id="matrix-tcg"' in html
    assert 'href="#trace-tcg-smram-default-smbase-none"' in html  # the TCG deadlock, linked
    assert 'id="trace-tcg-smram-default-smbase-none"' in html


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check", "--budget", "os-ipi"], "expected ID=N"),
        (["check", "--budget", "nope=1"], "unknown attack 'nope'"),
        (["check", "--attack", "concurrent-plug", "--budget", "concurrent-plug=2"], "does not act"),
        (["check", "--attack", "os-ipi", "--budget", "os-ipi=0"], "at least 1"),
        (["check", "--budget", "os-ipi=2"], "not among the attacks"),
        (["check", "--attack", "os-ipi", "--budget", "os-ipi=1", "--budget", "os-ipi=2"], "already given"),
        (["matrix", "--attack", "x"], "unknown attack 'x'"),
        (["check", "--accel", "hvf"], "'hvf' is not one of"),
        (
            ["report", "-o", "/tmp/x.html", "--attack", "none", "--budget", "os-ipi=1"],
            "not among the attacks",
        ),
    ],
)
def test_bad_budgets_and_accelerators_are_one_line_and_exit_2(args, needle):
    out = run(*args)
    assert out.returncode == 2
    assert needle in out.stderr and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
