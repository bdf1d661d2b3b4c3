"""The exhaustive checker: verdicts that follow from each design's logic, and mutation tests."""

from __future__ import annotations

import pytest

from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.world import Scenario

SMALL = Scenario(boot_cpus=1, max_cpus=2, plug=1, unplug=0)
DEFAULT = Scenario()


def verdict(design, *attacks, scenario=DEFAULT, **opts):
    res = run_check(CheckSetup(design, scenario, tuple(attacks), **opts), limits=Limits(states=400_000))
    assert res.verdict != "incomplete"
    return res


def test_shipped_design_holds_benign_with_every_property_judged():
    res = verdict("smram-default-smbase")
    assert res.verdict == "holds"
    assert "hotplug-completes" in res.judged and "eject-safe" in res.judged


@pytest.mark.parametrize(
    "attack",
    [
        "os-code-at-default-smbase",
        "dma-code-at-default-smbase",
        "os-early-init-sipi",
        "os-smbase-msr-write",
        "dma-tseg",
        "os-smram-reconfig",
        "concurrent-plug",
        "replug-same-slot",
        "os-init-in-smm",
    ],
)
def test_shipped_design_holds_against_each_adversary(attack):
    assert verdict("smram-default-smbase", attack).verdict == "holds"


def test_sdm_falls_to_code_planted_at_the_default_smbase():
    res = verdict("sdm", "os-code-at-default-smbase")
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    assert "os.payload at 0x38000" in res.detail
    plugged = next(t.choice for t in res.trace if t.actor == "mgmt")  # the slot the operator chose
    assert res.trace[-1].actor == f"cpu{plugged}" and "attacker code runs in SMM" in res.trace[-1].text
    assert any(t.actor == "adv:os-code-at-default-smbase" for t in res.trace)


def test_sdm_also_falls_to_dma():
    res = verdict("sdm", "dma-code-at-default-smbase")
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    assert "written by dma" in res.detail


def test_dma_guard_holds_against_dma_but_not_against_the_os():
    assert verdict("dma-guard", "dma-code-at-default-smbase").verdict == "holds"
    res = verdict("dma-guard", "os-code-at-default-smbase")
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")


def test_writable_smbase_msr_lets_the_os_into_smm():
    res = verdict("smbase-msr", "os-smbase-msr-write")
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    assert "0x408000" in res.detail


def test_preinit_spares_depends_on_the_vmm_keeping_smbase():
    # A re-added spare comes back with the reset SMBASE; the OS starts it with the hotplug SMI
    # still latched, so its first SMI runs whatever lies at 0x38000 (the boot relocation stub is
    # long gone).
    res = verdict("preinit-spares")
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    assert "0x38000" in res.detail
    assert verdict("preinit-spares", vmm_keeps_smbase=True).verdict == "holds"


def test_hotplug_smbase_registers_resist_os_writes():
    assert verdict("hotplug-smbase-reg", "os-hotplug-register-tamper", scenario=SMALL).verdict == "holds"


def test_unplug_request_before_the_insert_is_handled_is_lost_by_qemus_aml():
    # edk2-current: its APs stay in SMM until the ejects are written (see the next test)
    res = verdict("smram-default-smbase", "unplug-race", firmware="edk2-current")
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    assert res.detail.startswith("deadlock:") and "remove request pending for cpu3" in res.detail


def test_edk2_stable202211_lets_the_os_move_the_selector_under_the_monarchs_eject():
    """The race edk2 121af960e2 ("delay SMM exit") fixed: the APs leave SMM while the monarch
    writes selector and eject; the OS's hotplug worker on an AP, released, selects another CPU
    for its next method, and the eject bit lands on that CPU."""
    res = verdict("smram-default-smbase", "unplug-race")
    assert (res.verdict, res.prop) == ("violated", "eject-safe")
    assert "ejected although the OS had not asked for its removal (_EJ0)" in res.detail
    eject = res.trace[-1].text
    assert "monarch: ejects processor" in eject
    selected = [t for t in res.trace if t.actor == "cpu1" and "outl 0x0cd8" in t.text]
    assert selected  # the worker wrote the selector while the monarch was ejecting


# -- mutation tests: each safeguard of the shipped design is needed -----------------------------
def test_without_window_lock_the_os_plants_code_at_0x38000():
    res = verdict("smram-default-smbase", "os-code-at-default-smbase", no_window_lock=True)
    # The OS's write into the window the firmware treats as SMRAM is itself the first breach.
    assert (res.verdict, res.prop) == ("violated", "smram-isolation")
    assert res.detail == "non-SMM write of 0x38000+256 reached SMRAM [0x30000, 0x50000)"
    assert res.trace[-1].actor == "adv:os-code-at-default-smbase"


def test_without_smram_lock_the_os_reopens_tseg():
    res = verdict("smram-default-smbase", "os-smram-reconfig", no_smram_lock=True)
    # The write into TSEG without D_LCK is the first breach, before the code it plants could run.
    assert (res.verdict, res.prop) == ("violated", "smram-isolation")
    assert res.detail == "non-SMM write of 0x7010000+256 reached SMRAM [0x7000000, 0x8000000)"
    assert res.trace[-1].actor == "adv:os-smram-reconfig"


def test_without_gate_an_early_started_cpu_relocates_to_a_stale_smbase():
    res = verdict("smram-default-smbase", "os-early-init-sipi", no_gate=True)
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")


def test_without_broadcast_new_cpus_run_unrelocated():
    res = verdict("smram-default-smbase", no_broadcast=True)
    assert (res.verdict, res.prop) == ("violated", "smbase-in-tseg")


def test_init_in_smm_is_harmless_when_held_but_not_under_tcg():
    # Only an unplug: under TCG a hot-add never completes (see tests/test_cli_accel.py), so the
    # eject it would lead to is never reached.
    unplug = Scenario(boot_cpus=2, max_cpus=2, plug=0, unplug=1)
    kvm = verdict("smram-default-smbase", "os-init-in-smm", scenario=unplug, accel="kvm")
    assert kvm.verdict == "holds" and not kvm.findings
    # Under TCG the INIT resets the CPU being removed out of SMM: edk2's monarch waits for it at
    # the rendezvous for ever (no timeout past arrival) — a denial of service, never an eject.
    tcg = verdict("smram-default-smbase", "os-init-in-smm", scenario=unplug, accel="tcg")
    assert tcg.verdict == "holds"
    (hang,) = [f for f in tcg.findings if f.prop == "hotplug-completes"]
    assert "spins in the monarch's wait for every AP it counted" in hang.detail
    assert "waits for a SIPI" in hang.detail
    # smbase-msr's firmware ejects it anyway: a CPU outside SMM.
    res = verdict("smbase-msr", "os-init-in-smm", accel="tcg")
    assert (res.verdict, res.prop) == ("violated", "eject-safe")
    assert "ejected while not parked (outside SMM" in res.detail


def test_the_first_violation_is_a_shortest_trace():
    """BFS order: no schedule of fewer steps reaches the violation."""
    res = verdict("sdm", "os-code-at-default-smbase")
    from smm_hotplug.adversaries.catalog import resolve
    from smm_hotplug.checker.explore import explore, judged_properties

    setup = CheckSetup("sdm", DEFAULT, ("os-code-at-default-smbase",))
    system = setup.system()
    judged = judged_properties(resolve(["os-code-at-default-smbase"]))
    out = explore(system, judged, Limits(states=len(res.trace) * 10_000))
    assert len(out[3]) == len(res.trace)


def test_a_stopped_run_states_how_far_it_proved():
    """An incomplete run claims every schedule up to its bound; the shortest attack lies beyond."""
    violated = verdict("sdm", "all", scenario=SMALL)
    shortest = len(violated.trace)
    setup = CheckSetup("sdm", SMALL, ("all",))
    claimed = []
    for cap in (200, 2_000, violated.states // 2):
        res = run_check(setup, limits=Limits(states=cap))
        assert res.verdict == "incomplete"
        assert res.bound is not None and res.bound < shortest
        assert f"up to {res.bound} steps" in res.detail
        assert res.to_json()["bound"] == res.bound
        claimed.append(res.bound)
    assert claimed == sorted(claimed) and claimed[0] < claimed[-1]
    assert violated.bound is None
    # A depth limit is exact: one step short of the attack it proves, at its length it finds it.
    short = run_check(setup, limits=Limits(depth=shortest - 1))
    assert (short.verdict, short.bound) == ("incomplete", shortest - 1)
    assert f"stopped at depth {shortest - 1}:" in short.detail
    found = run_check(setup, limits=Limits(depth=shortest))
    assert (found.verdict, len(found.trace)) == ("violated", shortest)


def test_a_limit_or_an_interrupt_stops_the_search_as_a_bounded_proof():
    from smm_hotplug.adversaries.catalog import resolve
    from smm_hotplug.checker.explore import accepted_properties, explore, judged_properties

    setup = CheckSetup("smram-default-smbase", DEFAULT, ("all",))
    system, judged = setup.system(), judged_properties(resolve(["all"]))
    accepted = accepted_properties(resolve(["all"]))
    out = explore(system, judged, Limits(memory_mib=1), accepted=accepted)
    assert (out.verdict, out.stopped) == ("incomplete", "at 1 MiB of memory")
    assert 4096 <= out.transitions < 4096 + 200  # memory is looked at every 4,096 transitions

    def interrupt(states, transitions, depth):
        if depth == 5:
            raise KeyboardInterrupt

    out = explore(system, judged, progress=interrupt, accepted=accepted)
    assert (out.verdict, out.stopped, out.depth) == ("incomplete", "when interrupted (Ctrl-C)", 5)
    assert "no schedule of up to 5 steps violates a deciding safety property" in out.detail


# -- the hard cases: the proofs above go through them ----------------------------------------------
@pytest.mark.parametrize(
    "attack,cases",
    [
        (None, {"plug-before-broadcast"}),
        ("concurrent-plug", {"plug-before-broadcast", "plug-after-broadcast", "burst-after-scan"}),
        # (KVM: the CPU the OS started runs with the broadcast SMI pending when the monarch's INIT
        # comes; INIT drops it — so it waits for SIPI without an SMI while the SMI is handled)
        ("os-early-init-sipi", {"plug-before-broadcast", "plug-after-broadcast", "started-cpu-at-gate"}),
        ("unplug-race", {"plug-before-broadcast", "unplug-during-relocation"}),
    ],
)
def test_the_shipped_design_is_proven_through_the_hard_cases(attack, cases):
    """Non-vacuity: each hard case is reached exactly where its adversary makes it possible (the
    benign operator waits for the guest to settle, so it never plugs during an SMI)."""
    res = verdict("smram-default-smbase", *([attack] if attack else []))
    assert {case for case, steps in res.cases.items() if steps is not None} == cases
    assert all(steps > 60 for steps in res.cases.values() if steps is not None)  # after the boot


def test_a_witness_is_the_shortest_schedule_into_its_case_and_replays_into_it():
    from smm_hotplug.checker.cases import HARD_CASES
    from smm_hotplug.checker.run import run_witness
    from smm_hotplug.simulator import simulate

    setup = CheckSetup("smram-default-smbase", DEFAULT, ("os-early-init-sipi",))
    res = run_witness(setup, "started-cpu-at-gate")
    assert res.verdict == "reached" and len(res.schedule) == res.cases["started-cpu-at-gate"]
    system = setup.system()
    run = simulate(system, schedule=res.schedule)
    holds_in = HARD_CASES["started-cpu-at-gate"].holds_in
    assert holds_in(system, run.final)
    # Shortest: no state on the way is already an instance (BFS found the first one).
    prefix = simulate(system, schedule=res.schedule[:-1])
    assert not holds_in(system, prefix.final)
    assert any(t.actor == "adv:os-early-init-sipi" for t in res.trace)


def test_without_the_gate_the_started_cpu_does_not_wait():
    """The gate case needs the gate: with --fw-no-gate the early-started CPU never waits at it."""
    from smm_hotplug.checker.run import run_witness

    setup = CheckSetup("smram-default-smbase", SMALL, ("os-early-init-sipi",), no_gate=True)
    assert run_witness(setup, "started-cpu-at-gate").verdict == "unreachable"
    gated = CheckSetup("smram-default-smbase", SMALL, ("os-early-init-sipi",))
    assert run_witness(gated, "started-cpu-at-gate").verdict == "reached"
