"""The operator's choices: device_add into any free slot, device_del of any CPU but the boot
CPU, and (replug-same-slot) a re-plug as soon as the slot is empty — each a choice the checker
explores."""

from __future__ import annotations

from smm_hotplug.adversaries.catalog import resolve
from smm_hotplug.checker.explore import explore
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.guest import hotplug
from smm_hotplug.guest.osmem import EJECT_REQUEST
from smm_hotplug.hw.views import CPU
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario, System, World, make_system

SHIPPED = DESIGNS["smram-default-smbase"]


def _reach(system: System, predicate) -> list[tuple[str, int]] | None:
    """The shortest schedule into a state where ``predicate`` holds, or None."""
    out = explore(system, (), cases={"goal": predicate}, goal="goal")
    return out.schedule if out.verdict == "reached" else None


def _world_after(system: System, schedule: list[tuple[str, int]]) -> World:
    w = system.initial()
    for actor, choice in schedule:
        w = system.replay_move(w, actor, choice).world
    return w


def _operator_waits(system: System, done: int) -> World:
    """The first state in which the operator's next action (after ``done``) is possible."""
    sched = _reach(system, lambda s, w: w.done == done and s.os_up(w) and s.settled(w))
    assert sched is not None
    return _world_after(system, sched)


def test_the_operator_may_plug_any_free_slot_and_remove_any_cpu_but_the_boot_cpu():
    system = System(SHIPPED, Scenario(boot_cpus=2, max_cpus=5, plug=2, unplug=1))
    plugs = [mv for mv in system.moves(_operator_waits(system, 0)) if mv.actor == "mgmt"]
    assert [mv.choice for mv in plugs] == [2, 3, 4]
    for mv in plugs:
        assert mv.world.m.cpus[mv.choice].present and sum(c.present for c in mv.world.m.cpus) == 3
    w = _operator_waits(system, 2)
    unplugs = [mv for mv in system.moves(w) if mv.actor == "mgmt"]
    present = [s for s, c in enumerate(w.m.cpus) if c.present]
    assert len(present) == 4 and [mv.choice for mv in unplugs] == present[1:]  # never the boot CPU
    assert all(mv.world.unplugged == (mv.choice,) for mv in unplugs)


def test_the_checker_explores_the_operators_choices():
    system = System(SHIPPED, Scenario())  # 2 boot CPUs of 4, plug 2, unplug 1
    # The higher free slot plugged first.
    sched = _reach(system, lambda s, w: w.m.cpus[3].present and not w.m.cpus[2].present)
    assert sched is not None and ("mgmt", 3) in sched
    # A CPU present at boot removed (device_del of its QOM path) and ejected by the firmware.
    sched = _reach(system, lambda s, w: w.unplugged == (1,) and not w.m.cpus[1].present)
    assert sched is not None and sched.count(("mgmt", 1)) == 1
    # Every choice of the removal leads to a finished run: the shipped design holds for each.
    ends = {w.unplugged for w in _finished_worlds(system)}
    assert ends == {(1,), (2,), (3,)}


def _finished_worlds(system: System) -> list[World]:
    seen, frontier, done = {system.initial()}, [system.initial()], []
    while frontier:
        nxt = []
        for w in frontier:
            if system.finished(w):
                done.append(w)
                continue
            for mv in system.moves(w):
                if mv.world not in seen:
                    seen.add(mv.world)
                    nxt.append(mv.world)
        frontier = nxt
    return done


def _ejecting(system: System, w: World, uid: int) -> bool:
    """The OS's hotplug worker is still handling the eject request of CPU ``uid`` (it evaluates
    _STA and _OST after _EJ0, guest.hotplug)."""
    for c in w.m.cpus:
        if c.present and not c.smm and c.pc is not None:
            obj = system.plat.mem_object(w.m, c.pc[0], CPU)
            in_worker = obj is not None and obj.value == "os.hotplug" and isinstance(c.regs, hotplug.Work)
            if in_worker and c.regs.kind == EJECT_REQUEST and c.regs.uid == uid:
                return True
    return False


def test_replug_same_slot_replugs_while_the_slots_old_events_are_pending():
    """The slot is plugged again while the guest is still finishing the old CPU's removal (its
    hotplug worker still evaluating that CPU's _STA/_OST after the eject)."""
    scenario = Scenario(boot_cpus=1, max_cpus=2, plug=1, unplug=1)
    early = make_system(SHIPPED, scenario, resolve(["replug-same-slot"]))

    def replugged_during_the_eject(system, w):
        return w.done == len(system.script) and w.m.cpus[1].present and _ejecting(system, w, 1)

    sched = _reach(early, replugged_during_the_eject)
    assert sched is not None and [a for a, _ in sched].count("mgmt") == 3
    # The benign operator (re-plug after the guest settled) never does that.
    patient = System(SHIPPED, scenario, replug=True)
    assert _reach(patient, replugged_during_the_eject) is None


def test_mgmt_choices_are_slots_in_traces_and_replay_exactly():
    system = System(SHIPPED, Scenario(boot_cpus=1, max_cpus=4, plug=2, unplug=1))
    for seed in range(3):
        first = simulate(system, seed=seed)
        again = simulate(system, seed=seed)
        assert [(s.actor, s.choice) for s in again.steps] == [(s.actor, s.choice) for s in first.steps]
        mgmt = [s for s in first.steps if s.actor == "mgmt"]
        for step in mgmt:
            assert any(f"cpu{step.choice}" in ev.text for ev in step.events)
        replay = simulate(system, schedule=[(s.actor, s.choice) for s in first.steps])
        assert replay.final == first.final


def test_a_refused_choice_is_logged_and_the_operator_moves_on():
    """device_add is refused once broadcast SMI is negotiated without CPU hotplug: every choice
    of slot gets QEMU's refusal."""
    from smm_hotplug.hw import lpc

    system = System(SHIPPED, Scenario(boot_cpus=1, max_cpus=3, plug=1, unplug=0))
    w = _operator_waits(system, 0)
    m = w.m._replace(lpc=w.m.lpc._replace(smi_negotiated=1))  # broadcast only
    assert lpc.plug_refusal(m.lpc)
    moves = [mv for mv in system.moves(w._replace(m=m), record=True) if mv.actor == "mgmt"]
    assert [mv.choice for mv in moves] == [1, 2]
    for mv in moves:
        assert mv.world.done == 1 and mv.world.m == m
        assert any("refused" in ev.text for ev in mv.log.events)
