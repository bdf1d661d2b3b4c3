"""The sharpened properties: eject-safe, smbase-in-tseg's moment, firmware-table-consistent."""

from __future__ import annotations

from smm_hotplug.checker.run import run_check, run_witness
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import kernel
from smm_hotplug.hw.cpu import SS_SMBASE
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, SMM
from smm_hotplug.invariants import PROPERTIES
from smm_hotplug.simulator import fixed_operator, simulate
from smm_hotplug.world import Scenario, System, World

SHIPPED = "smram-default-smbase"


def _worlds(system: System, seed: int = 0) -> tuple[list[World], list]:
    res = simulate(system, seed=seed, operator=fixed_operator)  # plugs cpu2, cpu3; removes cpu3
    w = system.initial()
    worlds = [w]
    for st in res.steps:
        w = system.replay_move(w, st.actor, st.choice).world
        worlds.append(w)
    return worlds, res.steps


def _eject_step(system: System) -> tuple[World, tuple[str, int]]:
    """The world just before the firmware's eject write of the default scenario, and that move."""
    worlds, steps = _worlds(system)
    i = next(i for i, st in enumerate(steps) if any("ejects processor" in e.text for e in st.events))
    return worlds[i], (steps[i].actor, steps[i].choice)


def _violations(system: System, w: World, move: tuple[str, int]) -> list[str]:
    mv = system.replay_move(w, *move)
    return [f"{v.prop}: {v.text}" for v in mv.log.violations]


# -- eject-safe ----------------------------------------------------------------------------------
def test_the_benign_eject_is_safe():
    system = CheckSetup(SHIPPED).system()
    w, move = _eject_step(system)
    assert _violations(system, w, move) == []


def test_ejecting_a_cpu_the_os_still_runs_breaks_eject_safe():
    system = CheckSetup(SHIPPED).system()
    w, move = _eject_step(system)
    # As if the OS had never offlined APIC ID 3: it still counts it as running.
    m = system.plat.mem_write(w.m, kernel.online_flag(3), 1, 1, CPU, "os", Log())
    m = system.plat.mem_write(m, kernel.offline_ack(3), 1, 0, CPU, "os", Log())
    found = _violations(system, w._replace(m=m), move)
    assert found == ["eject-safe: cpu3 (APIC ID 3) ejected while the OS still runs it (not offlined)"]


def test_ejecting_a_cpu_the_os_did_not_ask_to_remove_breaks_eject_safe():
    system = CheckSetup(SHIPPED).system()
    w, move = _eject_step(system)
    m = w.m._replace(removal_asked=w.m.removal_asked & ~(1 << 3))  # no _EJ0 for cpu3
    found = _violations(system, w._replace(m=m), move)
    assert found == [
        "eject-safe: cpu3 (APIC ID 3) ejected although the OS had not asked for its removal (_EJ0)"
    ]


# -- smbase-in-tseg is judged when a CPU executes OS code --------------------------------------
def test_a_cpu_started_with_an_smi_pending_is_judged_after_that_smi():
    """The OS starts a hot-added CPU early; it takes the broadcast SMI first, waits at the gate
    and is relocated: it never executes OS code with the reset SMBASE."""
    setup = CheckSetup(SHIPPED, Scenario(), ("os-early-init-sipi",))
    res = run_witness(setup, "started-cpu-at-gate")
    assert res.verdict == "reached"
    system = setup.system()
    run = simulate(system, schedule=res.schedule)
    assert not [v for _, v in run.violations if v.prop == "smbase-in-tseg"]
    w = run.final
    at_gate = [c for c in w.m.cpus if c.present and c.smm and c.smbase == 0x30000]
    assert len(at_gate) == 1  # the CPU the OS started is at the gate, in SMM


def test_a_cpu_that_executes_os_code_unrelocated_still_breaks_smbase_in_tseg():
    res = run_check(CheckSetup(SHIPPED, Scenario(unplug=0), no_broadcast=True))
    assert (res.verdict, res.prop) == ("violated", "smbase-in-tseg")
    assert "executes OS code with SMBASE 0x30000" in res.detail


# -- firmware-table-consistent ----------------------------------------------------------------------
def test_firmware_table_consistent_is_judged_and_holds_for_the_shipped_design():
    assert "firmware-table-consistent" in PROPERTIES
    res = run_check(CheckSetup(SHIPPED))
    assert res.verdict == "holds" and "firmware-table-consistent" in res.judged


def _settled(system: System) -> World:
    return simulate(system, seed=0, operator=fixed_operator).final


def _check(system: System, w: World) -> list[str]:
    log = Log()
    system.check(w, log)
    return [v.text for v in log.violations if v.prop == "firmware-table-consistent"]


def _poke(system: System, w: World, addr: int, size: int, value: int) -> World:
    return w._replace(m=system.plat.mem_write(w.m, addr, size, value, SMM, "firmware", Log()))


def test_a_duplicate_table_entry_is_inconsistent():
    system = CheckSetup(SHIPPED).system()
    lay = FW.smram_layout(system.cfg)
    w = _settled(system)  # cpu3 was removed: slot 3 is free
    assert _check(system, w) == []
    bad = _poke(system, w, lay.apic_id_slot(3), 8, 2)
    assert _check(system, bad) == ["APIC ID 2 is in the firmware's CPU table twice (slots 2 and 3)"]


def test_a_relocated_cpu_missing_from_the_table_or_in_another_slot_is_inconsistent():
    system = CheckSetup(SHIPPED).system()
    lay = FW.smram_layout(system.cfg)
    w = _settled(system)
    gone = _poke(system, w, lay.apic_id_slot(2), 8, FW.INVALID_APIC_ID)
    assert _check(system, gone) == [
        "cpu2 (APIC ID 2) can enter SMM at tile 2 but is not in the firmware's CPU table"
    ]
    # ... unless it is being removed: dropped, with its QEMU selector waiting in the eject map.
    assert _check(system, _poke(system, gone, lay.selector_map(2), 8, 2)) == []
    moved = _poke(system, gone, lay.apic_id_slot(3), 8, 2)
    assert _check(system, moved) == [
        "cpu2 (APIC ID 2) uses the SMBASE tile of slot 2 but is recorded in slot 3"
    ]


def test_relocating_a_cpu_a_second_time_is_inconsistent():
    system = CheckSetup(SHIPPED).system()
    w = _settled(system)
    c = w.m.cpus[1]
    w = w._replace(m=w.m._replace(cpus=(w.m.cpus[0], c._replace(smm=True), *w.m.cpus[2:])))
    assert _check(system, w) == []  # in SMM at its tile: fine
    again = _poke(system, w, c.smbase + SS_SMBASE, 4, 0x30000)
    assert _check(system, again) == ["cpu1 (APIC ID 1), already relocated to tile 1, is given another SMBASE"]
