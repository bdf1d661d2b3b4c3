"""End-to-end hot-add and hot-remove on the platform, one schedule at a time."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smm_hotplug.designs.catalog import DESIGNS, get_design, with_options
from smm_hotplug.firmware import layout as FW
from smm_hotplug.simulator import fixed_operator, simulate
from smm_hotplug.world import Scenario, System

SHIPPED = DESIGNS["smram-default-smbase"]


def relocations(res):
    """(slot, SMBASE before, SMBASE after) for every RSM that changed SMBASE."""
    out = []
    for st_ in res.steps:
        for ev in st_.events:
            if ev.data and ev.data[0] == "rsm" and ev.data[2] != ev.data[3]:
                out.append(ev.data[1:])
    return out


def test_default_scenario_relocates_new_cpus_into_distinct_tiles_and_removes_one():
    system = System(SHIPPED, Scenario())
    res = simulate(system, seed=0, operator=fixed_operator)  # plugs cpu2, cpu3; removes cpu3
    assert res.outcome == "finished"
    assert res.ok, res.property_status()
    lay = FW.smram_layout(system.cfg)
    moved = {slot: (old, new) for slot, old, new in relocations(res)}
    assert set(moved) == {0, 1, 2, 3}
    for slot in (2, 3):  # hot-added: from the default SMBASE to their own tiles
        assert moved[slot] == (0x30000, lay.tile_smbase(slot))
        assert lay.tseg_base <= moved[slot][1] + 0x8000 < lay.tseg_end
    assert len({new for _, new in moved.values()}) == 4
    m = res.final.m
    assert [c.present for c in m.cpus] == [True, True, True, False]
    assert m.cpus[2].smbase == lay.tile_smbase(2)
    # QMP events as Linux's _OST calls make QEMU emit them: device check success for each new
    # CPU; for the removed one eject in progress, then success.  The OS CPU that ran _EJ0 leaves
    # SMM before the monarch ejects at SMI exit (edk2's rendezvous), finds _STA still 0xf, logs
    # "eject incomplete" and reports success all the same, as Linux's acpi_scan_hot_remove does.
    events = [ev.data for s in res.steps for ev in s.events if ev.kind == "qmp"]
    assert [e if e[0] == "ACPI_DEVICE_OST" else e[:1] for e in events] == [
        ("ACPI_DEVICE_OST", 2, 1, 0),
        ("ACPI_DEVICE_OST", 3, 1, 0),
        ("ACPI_DEVICE_OST", 3, 3, 0x80),
        ("ACPI_DEVICE_OST", 3, 3, 0),
        ("DEVICE_DELETED",),
    ]
    text = [ev.text for s in res.steps for ev in s.events]
    assert "OS: CPU 3: eject incomplete (_STA 0xf)" in text


@pytest.mark.parametrize("seed", [0, 1])  # one removes cpu2, the other cpu1
def test_freed_tile_is_reused_by_a_later_hot_add(seed):
    system = System(SHIPPED, Scenario(boot_cpus=1, max_cpus=3, plug=2, unplug=1), replug=True)
    res = simulate(system, seed=seed)
    assert res.outcome == "finished" and res.ok
    lay = FW.smram_layout(system.cfg)
    # The removed CPU's slot was relocated twice, into the same tile: first hot-add, then the
    # re-plug into the freed slot.
    (slot,) = res.final.unplugged
    again = [r for r in relocations(res) if r[0] == slot]
    assert len(again) == 2 and again[0] == again[1] and again[0][1] == 0x30000
    assert again[0][2] in {lay.tile_smbase(i) for i in (1, 2)}


@pytest.mark.parametrize(
    "design", ["sdm", "dma-guard", "smbase-msr", "hotplug-smbase-reg", "smram-default-smbase"]
)
def test_every_working_design_completes_the_benign_flow(design):
    res = simulate(System(DESIGNS[design], Scenario()), seed=1)
    assert res.outcome == "finished"
    assert res.ok, res.property_status()


def test_preinit_spares_needs_a_vmm_that_keeps_smbase():
    bad = simulate(System(DESIGNS["preinit-spares"], Scenario()), seed=0)
    assert not bad.ok
    assert bad.property_status()["smm-code-integrity"]["status"] == "violated"
    good = simulate(
        System(with_options(get_design("preinit-spares"), vmm_keeps_smbase=True), Scenario()), seed=0
    )
    assert good.outcome == "finished" and good.ok


def test_firmware_without_broadcast_leaves_new_cpus_unrelocated():
    design = with_options(SHIPPED, no_broadcast=True)
    res = simulate(System(design, Scenario(unplug=0)), seed=0)
    assert res.property_status()["smbase-in-tseg"]["status"] == "violated"


def test_a_recorded_schedule_replays_exactly():
    system = System(SHIPPED, Scenario())
    first = simulate(system, seed=7)
    again = simulate(system, schedule=[(s.actor, s.choice) for s in first.steps])
    assert again.final == first.final
    assert [s.events for s in again.steps] == [s.events for s in first.steps]


scenarios = st.builds(
    lambda boot, extra, plug_frac, unplug_frac: _scenario(boot, extra, plug_frac, unplug_frac),
    st.integers(1, 3),
    st.integers(0, 3),
    st.floats(0, 1),
    st.floats(0, 1),
)


def _scenario(boot: int, extra: int, plug_frac: float, unplug_frac: float) -> Scenario:
    plug = round(extra * plug_frac)
    unplug = round((boot - 1 + plug) * unplug_frac)
    return Scenario(boot_cpus=boot, max_cpus=boot + extra, plug=plug, unplug=unplug)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios, seed=st.integers(0, 2**32 - 1), concurrent=st.booleans())
def test_random_schedules_keep_every_invariant_and_finish(scenario, seed, concurrent):
    """Random interleavings of the benign flow; with `concurrent`, plugs do not wait for each other."""
    wait = frozenset({"unplug"}) if concurrent else frozenset({"plug", "unplug", "replug"})
    system = System(SHIPPED, scenario, wait_before=wait)
    res = simulate(system, seed=seed)
    assert not res.violations, res.violations[:3]
    assert res.outcome == "finished"
    m = res.final.m
    assert sum(c.present for c in m.cpus) == scenario.boot_cpus + scenario.plug - scenario.unplug


def test_random_choice_sequences_drive_the_schedule():
    """The same, with a schedule drawn move by move rather than from a seed."""
    system = System(SHIPPED, Scenario(boot_cpus=2, max_cpus=4, plug=2, unplug=1))
    rng = random.Random(99)
    for _ in range(5):
        res = simulate(system, seed=rng.randrange(1 << 30))
        assert res.ok
