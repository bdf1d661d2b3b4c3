"""The firmware synchronises, times out and ejects as edk2 does (stable202211 and current)."""

from __future__ import annotations

import itertools

from conftest import run_cli

from smm_hotplug.checker.explore import explore, judged_properties
from smm_hotplug.checker.limits import Limits
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.firmware import layout as FW
from smm_hotplug.firmware.options import EDK2_CURRENT, EDK2_STABLE202211
from smm_hotplug.hw.cpu import WAIT_SIPI, after_init
from smm_hotplug.hw.state import set_cpu
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import SMM
from smm_hotplug.simulator import fixed_operator, simulate
from smm_hotplug.world import Scenario, System, World

SHIPPED = "smram-default-smbase"
SMALL_UNPLUG = Scenario(boot_cpus=2, max_cpus=3, plug=1, unplug=1)


def _system(scenario: Scenario | None = None, attacks=(), **opts) -> System:
    return CheckSetup(SHIPPED, scenario or Scenario(), tuple(attacks), **opts).system()


def _read(system: System, w: World, addr: int, size: int) -> int:
    return system.plat.mem_read(w.m, addr, size, SMM)


def _place(system: System, w: World, slot: int) -> tuple[str, str] | None:
    c = w.m.cpus[slot]
    if c.pc is None:
        return None
    obj = system.plat.mem_object(w.m, c.pc[0], SMM if c.smm else "cpu")
    return (str(obj.value), c.pc[1]) if obj is not None else None


def _worlds(system: System, seed: int = 0) -> tuple[list[World], list[list[str]]]:
    """Every world of one random run (the initial one first) and each step's timeline lines."""
    res = simulate(system, seed=seed, operator=fixed_operator)  # plugs cpu2, cpu3; removes cpu3
    w = system.initial()
    worlds, texts = [w], []
    for st in res.steps:
        w = system.replay_move(w, st.actor, st.choice).world
        worlds.append(w)
        texts.append([e.text for e in st.events])
    return worlds, texts


def _run_on(system: System, w: World, first: str = "", steps: int = 400) -> tuple[World, list[str]]:
    """Step ``w`` on until nothing moves or it settles, taking the move of actor ``first`` when
    there is one, else the first move."""
    texts: list[str] = []
    for _ in range(steps):
        moves = list(system.moves(w, record=True))
        if not moves or system.settled(w):
            break
        mv = next((mv for mv in moves if mv.actor == first), moves[0])
        w = mv.world
        texts += [e.text for e in mv.log.events]
    return w, texts


# -- rendezvous exit ----------------------------------------------------------------------------
def test_the_rendezvous_is_reset_before_the_final_release_and_the_monarch_does_not_wait_for_aps():
    system = _system()
    lay = FW.smram_layout(system.cfg)
    worlds, _ = _worlds(system)
    released = 0
    for before, after in itertools.pairwise(worlds):
        if _read(system, before, lay.all_cpus_in_sync, 1) and not _read(
            system, after, lay.all_cpus_in_sync, 1
        ):
            released += 1
            # The single store that lets the CPUs leave comes after the reset of the rest.
            assert _read(system, after, lay.counter, 4) == 0
            assert _read(system, after, lay.bsp_index, 4) == FW.NO_BSP
            assert not _read(system, after, lay.inside_smm, 1)
            assert not any(_read(system, after, lay.present(i), 1) for i in range(lay.max_cpus))
    assert released >= 3  # ready-to-lock, the hot-add SMI, the unplug SMI


def test_an_smi_from_the_os_while_aps_leave_cannot_make_the_firmware_eject_an_unparked_cpu():
    """The old exit (a phase word reset only after the APs had left, victims waited for with a
    timeout) let an OS-raised SMI make the monarch eject a CPU running outside SMM."""
    setup = CheckSetup(SHIPPED, SMALL_UNPLUG, ("os-early-smi",))
    system = setup.system()
    out = explore(system, ("eject-safe", "firmware-table-consistent"), Limits(states=200_000))
    assert out.verdict == "holds", out.detail


# -- hot-unplug bookkeeping and the eject -------------------------------------------------------
def test_the_selector_map_is_kept_by_processor_number_and_cleared_after_each_eject_write():
    system = _system()
    lay = FW.smram_layout(system.cfg)
    worlds, texts = _worlds(system)
    dropped = next(i for i, t in enumerate(texts) if any("dropped from slot 3" in x for x in t))
    ejected = next(i for i, t in enumerate(texts) if any("ejects processor 3" in x for x in t))
    assert dropped < ejected
    for w in worlds[dropped + 1 : ejected + 1]:
        assert _read(system, w, lay.selector_map(3), 8) == 3  # QEMU selector of slot 3
        assert _read(system, w, lay.eject_handler, 8) != 0
    assert _read(system, worlds[ejected + 1], lay.selector_map(3), 8) == FW.NO_SELECTOR
    # The eject is written from the monarch's exit hook, after the final release.
    assert not _read(system, worlds[ejected], lay.all_cpus_in_sync, 1)
    assert _read(system, worlds[-1], lay.eject_handler, 8) == 0


def test_a_selector_map_entry_still_set_is_fatal_as_in_unplugcpus():
    system = _system()
    lay = FW.smram_layout(system.cfg)
    worlds, texts = _worlds(system)
    ej0 = next(i for i, t in enumerate(texts) if any("_EJ0 CPU 3" in x for x in t))
    w = worlds[ej0]
    m = system.plat.mem_write(w.m, lay.selector_map(3), 8, 7, SMM, "firmware", Log())
    _, lines = _run_on(system, w._replace(m=m))
    assert any("QemuSelectorMap[3] is still set (EFI_ALREADY_STARTED)" in x for x in lines)
    assert any("fatal error, dead loop in SMM" in x for x in lines)


def _victim_ejected_before_it_halts(system: System, w: World) -> bool:
    bsp, victim = _place(system, w, 0), _place(system, w, 2)
    return bsp == ("fw.smm_core", "ej_eject") and victim == ("fw.smm_core", "ap_exit")


def _ap_leaves_while_the_monarch_ejects(system: System, w: World) -> bool:
    bsp = _place(system, w, 0)
    return (
        w.m.cpus[0].smm
        and bsp is not None
        and bsp[1] in ("ej_sel", "ej_eject")
        and not w.m.cpus[1].smm
        and w.m.cpus[1].present
    )


def test_edk2_ejects_a_victim_that_has_not_halted_yet_and_eject_safe_accepts_it():
    system = _system(SMALL_UNPLUG)
    out = explore(
        system,
        judged_properties(()),
        cases={"early": _victim_ejected_before_it_halts},
        goal="early",
    )
    assert out.verdict == "reached"
    res = run_check(CheckSetup(SHIPPED, SMALL_UNPLUG))
    assert res.verdict == "holds" and "eject-safe" in res.judged


def test_202211_lets_the_other_aps_leave_during_the_ejects_current_edk2_keeps_them():
    cases = {"leaves": _ap_leaves_while_the_monarch_ejects}
    old = explore(_system(SMALL_UNPLUG, firmware=EDK2_STABLE202211), (), cases=cases, goal="leaves")
    assert old.verdict == "reached"
    new = explore(_system(SMALL_UNPLUG, firmware=EDK2_CURRENT), (), cases=cases, goal="leaves")
    assert new.verdict == "holds"  # no reachable state is one


# -- timeouts -------------------------------------------------------------------------------------
def test_aps_that_do_not_arrive_get_an_smi_ipi_between_the_two_sync_timeouts():
    """Without broadcast SMIs the ready-to-lock SMI reaches the BSP only; edk2 pulls the APs in."""
    res = simulate(_system(Scenario(plug=0, unplug=0), no_broadcast=True), seed=0)
    lines = [(st.actor, e.text) for st in res.steps for e in st.events]
    ipis = next(i for i, (_, t) in enumerate(lines) if "SMI IPIs to bring them in" in t)
    assert "APIC IDs [1]" in lines[ipis][1]
    assert any(a == "cpu1" and "SMI entry" in t for a, t in lines[ipis:])
    assert res.outcome == "finished" and res.ok


def test_the_monarch_proceeds_without_a_cpu_that_cannot_arrive_and_leaves_its_smi_pending():
    system = _system(Scenario(plug=0, unplug=0))
    res = simulate(system, seed=0)
    w = res.final  # settled: both CPUs idle in the OS
    m = set_cpu(w.m, 1, after_init(w.m.cpus[1], False, None, True))  # cpu1 was sent INIT: it waits for SIPI
    m = set_cpu(m, 0, m.cpus[0]._replace(smi=True))  # an SMI for the BSP alone
    w, lines = _run_on(system, w._replace(m=m))
    assert any("APIC IDs [1] not in SMM at the first sync timeout" in x for x in lines)
    assert any("proceeds without APIC IDs [1] (second sync timeout)" in x for x in lines)
    assert not w.m.cpus[0].smm
    assert w.m.cpus[1].mode == WAIT_SIPI and w.m.cpus[1].smi  # the IPI's SMI stays pending


def test_a_cpu_that_checks_in_after_the_door_is_locked_takes_no_part_and_leaves():
    from smm_hotplug.guest.kernel import OS_TRAMPOLINE
    from smm_hotplug.hw.apic import deliver
    from smm_hotplug.hw.cpu import DM_SIPI

    system = _system(Scenario(plug=0, unplug=0))
    lay = FW.smram_layout(system.cfg)
    w = simulate(system, seed=0).final
    m = set_cpu(w.m, 1, after_init(w.m.cpus[1], False, None, True))  # cpu1 waits for SIPI: it cannot arrive
    m = set_cpu(m, 0, m.cpus[0]._replace(smi=True))
    w = w._replace(m=m)
    while _read(system, w, lay.counter, 4) != FW.COUNTER_LOCKED:
        w = next(mv.world for mv in system.moves(w) if mv.actor == "cpu0")
    # Now cpu1 is started: it takes the SMI the monarch's IPI left pending, after the lock.
    m = deliver(system.plat, w.m, 1, DM_SIPI, OS_TRAMPOLINE >> 12, Log())
    w, lines = _run_on(system, w._replace(m=m), first="cpu1")
    assert any("checks in after the monarch closed arrival" in x for x in lines)
    assert system.settled(w)


# -- firmware versions ------------------------------------------------------------------------------
def test_about_to_leave_smm_sits_where_each_edk2_version_puts_it():
    for firmware, offset in ((EDK2_STABLE202211, 12), (EDK2_CURRENT, 21)):
        res = simulate(_system(Scenario(unplug=0), firmware=firmware), seed=0, detail=True)
        writes = {e.text for st in res.steps for e in st.events if st.actor == "cpu2"}
        assert f"write8 [0x{0x30000 + offset:x}] <- 0x1" in writes, firmware


def test_firmware_option_on_the_command_line():
    out = run_cli(
        "check",
        "--firmware",
        "edk2-current",
        "--boot-cpus",
        "1",
        "--max-cpus",
        "2",
        "--unplug",
        "0",
        "--plug",
        "1",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    assert '"firmware": "edk2-current"' in out.stdout
    bad = run_cli("check", "--firmware", "edk2-2019")
    assert bad.returncode == 2 and "edk2-2019" in bad.stderr and "Traceback" not in bad.stderr
    sim = run_cli("simulate", "--firmware", "edk2-current", "--plug", "1", "--unplug", "0", "--json")
    assert sim.returncode == 0 and '"firmware": "edk2-current"' in sim.stdout
    assert "--firmware" in run_cli("matrix", "--help").stdout
    assert "--firmware" in run_cli("report", "--help").stdout


def test_a_trace_file_remembers_the_firmware_version(tmp_path):
    from smm_hotplug.checker.replay import replay
    from smm_hotplug.checker.traces import save

    setup = CheckSetup(SHIPPED, Scenario(), ("unplug-race",), firmware=EDK2_CURRENT)
    res = run_check(setup)
    path = tmp_path / "t.json"
    save(path, setup, res)
    rep = replay(str(path))
    assert rep.setup.firmware == EDK2_CURRENT and [tuple(s) for s in rep.recorded.schedule] == res.schedule
