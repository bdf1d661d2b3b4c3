"""hotplug-completes violations: the run from power-on into the stuck end, and who waits for what."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from smm_hotplug.checker.explore import CheckResult, TraceStep
from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.hw import cpuhp
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario

SHIPPED = "smram-default-smbase"


def _graph(edges: dict[int, list[int]]) -> StateGraph:
    g = StateGraph()
    for _ in range(1, len(edges)):
        g.add(0, "cpu0", 0)
    for s in range(len(edges)):
        g.expanded(edges[s])
    return g


# -- where a run that cannot finish ends up -------------------------------------------------------
def test_the_stuck_end_is_a_state_without_moves_when_there_is_one():
    # 0 -> 1 -> 3 (finished); 0 -> 2 -> 4 -> 5 (no moves, not finished)
    g = _graph({0: [1, 2], 1: [3], 2: [4], 3: [], 4: [5], 5: []})
    good = g.can_finish([3])
    assert g.stuck_end(good) == (5, [])


def test_the_stuck_end_of_a_livelock_is_a_cycle_through_its_first_state():
    # 0 -> 1 (finished); 0 -> 2 -> 3 -> 4 -> 5 -> 3: the cycle 3 -> 4 -> 5 repeats for ever.
    g = _graph({0: [1, 2], 1: [], 2: [3], 3: [4], 4: [5], 5: [3]})
    assert g.stuck_end(g.can_finish([1])) == (3, [3, 4, 5])


def test_the_stuck_end_skips_cycles_a_run_can_leave():
    # 2 <-> 3 can be left for 4 <-> 5, which cannot be left: only that one is the end.
    g = _graph({0: [1, 2], 1: [], 2: [3], 3: [2, 4], 4: [5], 5: [4]})
    assert g.stuck_end(g.can_finish([1])) == (4, [4, 5])
    assert g.cannot_finish([1]) == 2  # the point of no return comes earlier


def test_no_stuck_end_when_everything_can_finish():
    g = _graph({0: [1], 1: [0, 2], 2: []})
    assert g.stuck_end(g.can_finish([2])) is None


_TOY_MOVES: dict[int, list[tuple[str, int, int]]] = {
    0: [("mgmt", 0, 1), ("mgmt", 1, 5)],
    1: [("cpu0", 0, 2)],
    2: [("cpu1", 0, 3), ("cpu0", 0, 3)],  # two moves to the same state: the first is shown
    3: [("adv:x", 2, 2)],
    5: [],
}


class _Move:
    def __init__(self, actor: str, choice: int, world: int) -> None:
        self.actor, self.choice, self.world = actor, choice, world


class _Toy:
    """A system of numbered states, for the lasso's replay: each state's moves in order."""

    def initial(self) -> int:
        return 0

    def moves(self, w: int):
        return (_Move(*m) for m in _TOY_MOVES[w])

    def replay_move(self, w: int, actor: str, choice: int) -> _Move:
        return next(m for m in self.moves(w) if (m.actor, m.choice) == (actor, choice))


def test_the_lasso_is_replayed_from_the_graph_alone(monkeypatch: pytest.MonkeyPatch):
    """find_stuck keeps no states: it replays the schedule to the stuck end and takes each step
    round the cycle as the move whose place is the next state's place among the successors."""
    from smm_hotplug.checker import liveness

    toy = _Toy()
    g, ids, order = StateGraph(), {0: 0}, [0]
    for w in order:  # breadth first, as the searches number states
        targets = []
        for m in toy.moves(w):
            if m.world not in ids:
                ids[m.world] = len(order)
                order.append(m.world)
                g.add(ids[w], m.actor, m.choice)
            targets.append(ids[m.world])
        g.expanded(targets)
    seen = {}

    def stuck_end(system, end, steps, cycle_start, no_return, moving):
        seen.update(end=end, moving=moving)
        return [], "stuck"

    monkeypatch.setattr(liveness, "stuck_end", stuck_end)
    found = liveness.find_stuck(toy, g, [ids[5]])  # type: ignore[arg-type]
    assert found is not None
    assert found.schedule == [("mgmt", 0), ("cpu0", 0), ("cpu1", 0), ("adv:x", 2)]
    assert (found.cycle_start, found.no_return) == (2, 1)
    assert seen == {"end": 2, "moving": {"cpu1", "adv:x"}}


# -- the checker's hotplug-completes traces ---------------------------------------------------------
def test_an_unplug_race_hang_is_shown_up_to_the_state_where_nothing_moves():
    setup = CheckSetup(SHIPPED, Scenario(), ("unplug-race",), firmware="edk2-current")
    res = run_check(setup)
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    system = setup.system()
    run = simulate(system, schedule=res.schedule)
    assert list(system.moves(run.final)) == []  # the trace ends where nothing can move
    assert not system.finished(run.final)
    assert res.cycle_start is None and res.no_return is not None and res.no_return < len(res.schedule)
    assert {s["actor"] for s in res.stuck} == {"cpu0", "cpu1", "cpu2", "cpu3"}
    assert all(s["waiting_for"] == "is idle in the OS (HLT, interrupts on)" for s in res.stuck)
    doc = res.to_json()
    assert doc["stuck"][0] == {
        "actor": "cpu0",
        "waiting_for": "is idle in the OS (HLT, interrupts on)",
        "at": "os.kernel:idle",
    }
    assert doc["cycle_start"] is None and doc["point_of_no_return"] == res.no_return


def test_a_deterministic_hang_is_shown_from_power_on_into_the_stuck_end():
    """Every schedule hangs, so the point of no return is power-on; the trace still runs into the
    hang and names the CPU left behind.  (QEMU's GET_NEXT_CPU_WITH_EVENT as first posted, which
    does not see the firmware-remove bit: the history entry qemu-cpuhp-getnext-fw-remove.)"""
    scenario = Scenario(boot_cpus=2, max_cpus=3, plug=1, unplug=1)
    res = run_check(CheckSetup(SHIPPED, scenario, revert=(cpuhp.FIX_GET_NEXT_FW_REMOVE,)))
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    assert res.no_return == 0 and len(res.trace) > 100
    assert res.detail.startswith("deadlock: after")
    assert "fw-remove pending for cpu2" in res.detail
    stuck = {s["actor"]: s["waiting_for"] for s in res.stuck}
    assert stuck["cpu2"] == "is offline in the OS (CLI; HLT), waiting to be ejected"
    assert stuck["cpu0"] == "is idle in the OS (HLT, interrupts on)"


# -- how a hang is shown -----------------------------------------------------------------------------
def _livelock() -> CheckResult:
    trace = [TraceStep("cpu0", 0, f"step {i}") for i in range(6)]
    return CheckResult(
        "smram-default-smbase",
        [],
        "violated",
        "hotplug-completes",
        "livelock: steps 3-5 repeat for ever and the scenario never completes",
        [("cpu0", 0)] * 6,
        10,
        12,
        6,
        0.1,
        ("hotplug-completes",),
        trace=trace,
        stuck=[
            {"actor": "cpu0", "waiting_for": "keeps moving in the cycle (at the end: x)", "at": "p:a"},
            {
                "actor": "mgmt",
                "waiting_for": "waits for the guest to settle before its next action (plug)",
                "at": "script step 1",
            },
        ],
        cycle_start=3,
        no_return=2,
    )


def test_the_text_output_marks_the_cycle_and_names_the_stuck_actors():
    from smm_hotplug.report.checks import render_check

    out = io.StringIO()
    render_check(_livelock(), Console(file=out, width=200, highlight=False))
    text = out.getvalue()
    assert "---- start of cycle: steps 3-5 repeat for ever ----" in text
    assert text.index("start of cycle") < text.index("step 3")
    assert "stuck for ever (in the repeating cycle):" in text
    assert "mgmt  waits for the guest to settle before its next action (plug)" in text


def test_the_sequence_diagram_ends_with_the_stuck_actors_and_marks_the_cycle():
    from smm_hotplug.report.html import trace_section

    setup = CheckSetup(SHIPPED, Scenario(), ("unplug-race",), firmware="edk2-current")
    res = run_check(setup)
    svg = trace_section(setup.system(), res, "t").diagram.svg
    assert svg.count("stuck: is idle in the OS") == 4
    assert "stuck for ever (no actor can move)" in svg
    # A lasso: the band where the cycle starts, before the steps that repeat.
    res.cycle_start = len(res.schedule) - 3
    svg = trace_section(setup.system(), res, "t").diagram.svg
    assert (
        'class="cycle"' in svg and f"steps {res.cycle_start}-{len(res.schedule) - 1} repeat for ever" in svg
    )


def test_stuck_actors_are_described_by_the_waits_of_their_steps():
    from smm_hotplug.checker.liveness import describe

    setup = CheckSetup(SHIPPED, Scenario())
    system = setup.system()
    run = simulate(system, seed=0)
    w = system.initial()
    seen: dict[str, dict[str, str]] = {}
    for st in run.steps:
        w = system.replay_move(w, st.actor, st.choice).world
        for s in describe(system, w):
            seen.setdefault(s["at"], s)
    assert seen["fw.smm_core:rel_wait_leave in SMM"]["waiting_for"] == (
        "spins in the monarch's wait for AboutToLeaveSmm from the CPU being relocated"
    )
    assert seen["fw.pen:halt"]["waiting_for"] == "is halted in the pen (CLI; HLT) until the OS starts it"
    assert (
        seen["script step 2"]["waiting_for"]
        == "waits for the guest to settle before its next action (unplug)"
    )
    assert seen["wait-for-SIPI"]["waiting_for"].startswith("waits for a SIPI")
