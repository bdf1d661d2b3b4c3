"""The search engine: compressed, fingerprinted, memoised and multi-worker searches give the plain
search's results — verdicts, state and transition counts, depth, shortest traces, hard cases,
findings with their own shortest traces, hotplug-completes with its run into the stuck end — on
every cell of a small configuration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smm_hotplug.adversaries.catalog import resolve
from smm_hotplug.checker.cases import HARD_CASES
from smm_hotplug.checker.explore import accepted_properties, check, judged_properties
from smm_hotplug.checker.limits import Limits, Watch
from smm_hotplug.checker.progress import growth, line, states_left
from smm_hotplug.checker.run import matrix_columns, run_check
from smm_hotplug.checker.search import Options, Snapshot, Task, _Search
from smm_hotplug.checker.store import Visited, collision_probability
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE
from smm_hotplug.hw.config import parse_smp
from smm_hotplug.world import Scenario

SMALL = Scenario(boot_cpus=1, max_cpus=2, plug=1, unplug=0)
# The large cells of SMALL (`all` and `os-ipi` grow to millions of states) are compared up to a
# depth that still takes in a violation: sdm × all at 42 steps, smbase-msr × os-ipi at 48.
BIG_COLUMNS = {"all": Limits(depth=42), "os-ipi": Limits(depth=48)}
BIG_CELLS = {(d, c): limits for d in DESIGNS for c, limits in BIG_COLUMNS.items()}
CELLS = [(d, c) for d in DESIGNS for c in matrix_columns()]


def _attacks(column: str) -> tuple[str, ...]:
    return () if column == "none" else (column,)


def _result(res) -> tuple:
    return (
        res.verdict,
        res.prop,
        res.detail,
        res.states,
        res.transitions,
        res.depth,
        res.schedule,
        res.cases,
        res.stopped,
        [(f.prop, f.detail, f.schedule) for f in res.findings],
        res.undecided,
        res.stuck,
        res.cycle_start,
        res.no_return,
    )


def _check(design: str, column: str, options: Options, scenario: Scenario = SMALL):
    limits = BIG_CELLS.get((design, column))
    return run_check(CheckSetup(design, scenario, _attacks(column)), limits, describe=False, options=options)


# -- the visited set ---------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.tuples(*[st.integers(0, 6)] * 3), max_size=60), max_size=8),
    st.booleans(),
)
def test_the_visited_set_numbers_keys_in_order_of_first_sight(batches, fingerprint):
    v = Visited(fingerprint=fingerprint, capacity=4)
    seen: dict[tuple, int] = {}
    for batch in batches:
        keys = np.array(batch, np.uint32).reshape(-1, 3)
        ids, new = v.add(keys)
        for row, sid, fresh in zip(batch, ids.tolist(), new.tolist(), strict=True):
            if row in seen:
                assert sid == seen[row] and not fresh
            else:
                assert fresh and sid == len(seen)
                seen[row] = sid
    assert len(v) == len(seen)


def test_memory_per_state_is_within_the_targets():
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 1 << 20, size=(200_000, 3)).astype(np.uint32)
    for fingerprint, bound in ((False, 40), (True, 16)):
        v = Visited(fingerprint=fingerprint)
        for lo in range(0, len(keys), 5000):
            v.add(keys[lo : lo + 5000])
        assert v.nbytes / len(v) <= bound


def test_fingerprint_collision_probability_is_tlcs_optimistic_estimate():
    # TLC: d * (g - d) / 2^64 for d distinct states among g generated (initial + transitions).
    assert collision_probability(1000, 2999) == 1000 * 2000 / 2**64
    assert collision_probability(5, 4) == 0.0


# -- memoised CPU steps ------------------------------------------------------------------------
def _states(design: str, column: str, memo: bool) -> tuple[tuple, list]:
    setup = CheckSetup(design, SMALL, _attacks(column))
    system = setup.system()
    adversaries = resolve(list(setup.attacks))
    judged, accepted = judged_properties(adversaries), accepted_properties(adversaries)
    cases = {c: hc.holds_in for c, hc in HARD_CASES.items()}
    watch = Watch(BIG_CELLS.get((design, column)))
    search = _Search(Task(system, judged, accepted, watch, cases, None, Options(memo=memo)))
    out = search.run()
    keys = search.visited.keys.view()
    worlds = [search.codec.world(tuple(k.tolist())) for k in keys]
    return out._replace(stats=None), worlds


@pytest.mark.parametrize(("design", "column"), CELLS)
def test_memoised_and_plain_search_find_the_same_states_in_the_same_order(design, column):
    plain, plain_states = _states(design, column, memo=False)
    memo, memo_states = _states(design, column, memo=True)
    assert memo == plain
    assert memo_states == plain_states


def test_a_cpu_step_that_changes_another_cpu_says_so():
    """The memo relies on the hardware reporting steps beyond a CPU's local view (Log.cross)."""
    system = CheckSetup("smram-default-smbase", Scenario(), ("os-early-smi",)).system()
    w, frontier, seen, crossed = system.initial(), [], set(), 0
    frontier.append(w)
    while frontier and len(seen) < 3000:
        w = frontier.pop()
        for mv in system.moves(w):
            if mv.actor.startswith("cpu"):
                slot = int(mv.actor[3:])
                others = [i for i, (a, b) in enumerate(zip(w.m.cpus, mv.world.m.cpus, strict=True)) if a != b]
                if set(others) - {slot}:
                    assert mv.log.cross, f"{mv.actor} changed cpus {others} without Log.cross"
                    crossed += 1
            if mv.world not in seen:
                seen.add(mv.world)
                frontier.append(mv.world)
    assert crossed > 0


def test_the_memo_refuses_a_step_that_changes_another_cpu_unreported():
    from smm_hotplug.checker.memo import StepMemo
    from smm_hotplug.hw.state import set_cpu
    from smm_hotplug.hw.trace import NullLog

    system = CheckSetup("smram-default-smbase", Scenario()).system()
    m = system.initial().m

    class Sneaky:
        def cpu_step(self, m, slot, log):
            return set_cpu(m, 1, m.cpus[1]._replace(smi=True))  # no log.cross

    with pytest.raises(AssertionError, match="without reporting"):
        StepMemo(Sneaky())(m, 0, NullLog())


# -- the same results however the search is run ------------------------------------------------
@pytest.mark.parametrize(("design", "column"), CELLS)
def test_fingerprints_and_two_workers_give_the_plain_result(design, column):
    plain = _result(_check(design, column, Options(memo=False)))
    assert _result(_check(design, column, Options(fingerprint=True))) == plain
    assert _result(_check(design, column, Options(workers=2))) == plain


SPARSE = Scenario.from_smp(parse_smp("2,maxcpus=6,sockets=2,cores=3"), plug=1, unplug=1)  # APIC IDs 0-2, 4-6


@pytest.mark.parametrize(
    ("design", "attacks", "scenario", "firmware", "limits", "goal"),
    [
        # stopped by the state limit mid-layer, after findings
        ("sdm", ("all",), Scenario(), None, Limits(states=2_000), None),
        ("sdm", ("os-code-at-default-smbase",), Scenario(), None, None, None),  # a violation
        # hotplug-completes decides: a deadlock after an unplug race on the current edk2, after
        # a migration on edk2-stable202211
        ("smram-default-smbase", ("unplug-race",), Scenario(), "edk2-current", None, None),
        ("smram-default-smbase", ("migration",), Scenario(), None, None, None),
        # holds, with findings: eject-safe and hotplug-completes (found on the whole graph)
        ("smram-default-smbase", ("os-hotplug-register-tamper",), SMALL, None, None, None),
        # sparse APIC IDs and the operator's choice of slots
        ("sdm", ("os-code-at-default-smbase",), SPARSE, None, None, None),
        ("smram-default-smbase", ("os-early-init-sipi",), Scenario(), None, None, "started-cpu-at-gate"),
    ],
)
def test_three_workers_and_small_chunks_give_the_one_process_result(
    design, attacks, scenario, firmware, limits, goal
):
    setup = CheckSetup(design, scenario, attacks, firmware=firmware or DEFAULT_FIRMWARE)
    system = setup.system()
    adversaries = resolve(list(attacks))
    judged = () if goal else judged_properties(adversaries)
    accepted = () if goal else accepted_properties(adversaries)

    def run(options: Options) -> tuple:
        res = check(system, list(attacks), judged, limits, goal=goal, accepted=accepted, options=options)
        return _result(res)

    reference = run(Options(memo=False))
    assert run(Options()) == reference
    assert run(Options(workers=3)) == reference
    assert run(Options(chunk=7)) == reference
    assert run(Options(workers=2, fingerprint=True)) == reference


def test_fingerprints_on_workers_give_tlcs_estimate_from_each_workers_own():
    """A worker's fingerprints only ever meet its own: the estimate "based on the actual
    fingerprints" is the closest pair within any one worker."""
    res = _check("smram-default-smbase", "os-early-smi", Options(workers=2, fingerprint=True))
    assert 0 < res.stats["fingerprint_spacing_probability"] < 1e-6


def test_a_local_dask_cluster_gives_the_in_process_result():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
    ) as cluster:
        for design, column, scenario in [
            ("sdm", "os-code-at-default-smbase", Scenario()),  # a violation
            ("smram-default-smbase", "migration", Scenario()),  # hotplug-completes: a deadlock
            ("smram-default-smbase", "os-hotplug-register-tamper", SMALL),  # holds, with findings
        ]:
            here = _check(design, column, Options(), scenario)
            there = _check(design, column, Options(cluster=cluster.scheduler_address), scenario)
            assert _result(there) == _result(here)
            assert there.stats["workers"] == 2


# -- progress ------------------------------------------------------------------------------------
def test_progress_estimates_what_is_left_once_layers_shrink():
    growing = Snapshot(5, 160, 80, 310, 900, 2.0, 50.0, (10, 20, 40, 80))
    assert growth(growing.layers) == pytest.approx(2.0)
    assert states_left(growing) is None
    assert "layers growing ×2.000 per step" in line(growing)
    shrinking = Snapshot(9, 10, 0, 1000, 3000, 10.0, 50.0, (160, 80, 40, 20))
    assert states_left(shrinking) == pytest.approx(20 * 0.5 / 0.5 + 10 * 0.5)
    assert "states left" in line(shrinking)
