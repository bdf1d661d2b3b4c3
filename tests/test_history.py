"""The history catalog: every real QEMU and edk2 bug is rediscovered with its fix reverted, its
scenario holds with the fix in place, and its shortest trace shows the mechanism its commit or
review describes.  The whole catalog runs here on every CI run (22 checks, ~15 s of checking on
two workers); each variant is also tested where it lives (device, firmware options, catalog,
trace files, command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from smm_hotplug.checker.explore import check
from smm_hotplug.checker.history import EntryResult, entry_setup, run_history
from smm_hotplug.checker.replay import replay
from smm_hotplug.checker.traces import CheckSetup, save
from smm_hotplug.designs.catalog import get_design
from smm_hotplug.designs.history import BACKPORTED, ENTRIES, IN_VERSION, MODEL_FIXES, get_entry, with_fixes
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import (
    EDK2_CURRENT,
    EDK2_STABLE202211,
    FIX_DELAY_SMM_EXIT,
    FIX_SKIP_KNOWN_APIC_ID,
    FirmwareOptions,
)
from smm_hotplug.hw import cpuhp, lpc, mch
from smm_hotplug.hw.config import SMI_F_BROADCAST, HardwareFeatures, platform_config
from smm_hotplug.hw.effects import Eject, FirmwareRemove
from smm_hotplug.invariants import PROPERTIES
from smm_hotplug.world import Scenario

SHIPPED = "smram-default-smbase"


@pytest.fixture(scope="module")
def catalog() -> dict[str, EntryResult]:
    return {r.entry.id: r for r in run_history(workers=2)}


# -- the whole catalog ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entry_id", list(ENTRIES))
def test_each_bug_is_rediscovered_and_its_fix_holds(catalog, entry_id):
    r = catalog[entry_id]
    entry = r.entry
    assert (r.reverted.verdict, r.reverted.prop) == ("violated", entry.prop), r.reverted.detail
    assert r.fixed.verdict == "holds", r.fixed.detail
    assert r.missing() == [], [t.text for t in r.reverted.trace]
    assert r.ok and r.problems() == []
    # the runs say which fixes they took out or put in
    assert entry_id in r.reverted.reverted and entry_id not in r.reverted.backported
    assert r.fixed.reverted == () and r.fixed.backported == entry.scenario.backport
    # the same scenario both times
    assert r.reverted.scenario == r.fixed.scenario and r.reverted.attacks == r.fixed.attacks


def test_every_fix_a_step_can_revert_has_its_entry():
    assert set(ENTRIES) == MODEL_FIXES
    for entry in ENTRIES.values():
        assert entry.prop in PROPERTIES and entry.shows and entry.race and entry.step
        assert entry.id.startswith(entry.project.lower())


def test_a_problem_is_named_when_an_entry_is_not_as_claimed(catalog):
    r = catalog["qemu-cpuhp-getnext-fw-remove"]
    swapped = EntryResult(r.entry, r.fixed, r.reverted)  # as if the fix were the bug
    assert not swapped.ok
    assert swapped.problems() == [
        "qemu-cpuhp-getnext-fw-remove: with the fix reverted expected hotplug-completes violated, got holds",
        "qemu-cpuhp-getnext-fw-remove: with the fix in place expected holds, got violated hotplug-completes",
    ]


def test_020bb4b46d_ends_in_the_hang_its_commit_describes():
    """Judged without the table property, the second relocation of the known CPU hangs the
    monarch: the CPU is in the rendezvous's busy-wait and never answers."""
    setup = entry_setup(get_entry(FIX_SKIP_KNOWN_APIC_ID), reverted=True)
    judged = tuple(p for p in PROPERTIES if p != "firmware-table-consistent")
    res = check(setup.system(), list(setup.attacks), judged)
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    stuck = {s["actor"]: s["waiting_for"] for s in res.stuck}
    assert stuck["cpu0"] == "spins in the monarch's wait for AboutToLeaveSmm from the CPU being relocated"
    assert stuck["cpu3"] == "waits on its Run semaphore for the monarch to end the SMI"


# -- where each variant lives ------------------------------------------------------------------------
def _hp(reverted=frozenset()) -> tuple[cpuhp.CpuHp, cpuhp.Links]:
    cfg = platform_config(2, 4, hw=HardwareFeatures(reverted=frozenset(reverted)))
    return cpuhp.CpuHp(modern=True), cpuhp.Links(cfg, present=0b0011)


def test_get_next_sees_the_firmware_remove_bit_unless_reverted():
    hp = cpuhp.CpuHp(modern=True, fw_remove=0b0010)
    assert cpuhp.next_with_event(hp, 4) == 1
    assert cpuhp.next_with_event(hp, 4, frozenset({cpuhp.FIX_GET_NEXT_FW_REMOVE})) == 0


def test_eject_clears_the_firmware_remove_bit_and_writing_it_sets_it_unless_reverted():
    hp, links = _hp()
    hp = hp._replace(selector=1)
    hp, eff = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
    assert hp.fw_remove == 0b10 and eff == (FirmwareRemove(1),)
    again, _ = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
    assert again.fw_remove == 0b10  # setting twice keeps it set
    ejected, eff = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    assert ejected.fw_remove == 0 and eff == (Eject(1),)
    empty = hp._replace(selector=2, fw_remove=0)
    assert cpuhp.write(empty, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)[0].fw_remove == 0  # no CPU


def test_the_rfc_left_the_bit_after_an_eject_and_flipped_it_on_each_write():
    hp, links = _hp({cpuhp.FIX_EJECT_CLEARS_FW_REMOVE})
    hp = hp._replace(selector=1)
    hp, eff = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
    assert hp.fw_remove == 0b10 and eff == (FirmwareRemove(1),)
    ejected, eff = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    assert ejected.fw_remove == 0b10 and eff == (Eject(1),)
    flipped, eff = cpuhp.write(hp, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)
    assert flipped.fw_remove == 0 and eff == ()
    empty = hp._replace(selector=2)
    assert cpuhp.write(empty, links, cpuhp.FLAGS, 1, cpuhp.F_FW_REMOVE)[0].fw_remove == 0b110  # any slot


def test_plug_and_unplug_refusals_can_be_reverted():
    broadcast = lpc.Lpc(smi_negotiated=SMI_F_BROADCAST)
    assert lpc.plug_refusal(broadcast) == "cpu hotplug with SMI wasn't enabled by firmware"
    assert lpc.plug_refusal(broadcast, frozenset({lpc.FIX_REFUSE_PLUG})) is None
    assert lpc.unplug_refusal(broadcast, True, "cpu") == "cpu hot-unplug with SMI wasn't enabled by firmware"
    assert lpc.unplug_refusal(broadcast, True, "cpu", frozenset({lpc.FIX_REFUSE_UNPLUG})) is None
    # legacy mode refuses any CPU unplug, fix or not
    assert lpc.unplug_refusal(broadcast, False, "cpu", frozenset({lpc.FIX_REFUSE_UNPLUG})).startswith("acpi:")


def test_the_backported_migration_fix_keeps_the_window_locked():
    plain = platform_config(1, 1)
    fixed = platform_config(1, 1, hw=HardwareFeatures(backported=frozenset({mch.FIX_SMBASE_MIGRATION})))
    locked = mch.Mch(f_smbase=mch.F_SMBASE_LCK, f_smbase_wmask=0)
    assert mch.window_locked(locked)
    loaded = locked._replace(f_smbase_wmask=0xFF)  # the destination's reset mask, the value migrated
    assert mch.VMSTATE.post_load(loaded, plain).f_smbase == 0  # QEMU 7.2: the lock is lost
    assert mch.window_locked(mch.VMSTATE.post_load(loaded, fixed))
    queried = mch.Mch(f_smbase=mch.F_SMBASE_IN_RAM, f_smbase_wmask=0xFF)
    assert mch.VMSTATE.post_load(queried, fixed).f_smbase_wmask == mch.F_SMBASE_LCK  # can still lock
    # with the fix a value written before the query is kept (no effect) instead of discarded
    fresh = mch.reset(fixed)
    assert mch.config_write(fresh, fixed, mch.F_SMBASE, 1, 0x04)[0].f_smbase == 0x04
    assert mch.config_write(mch.reset(plain), plain, mch.F_SMBASE, 1, 0x04)[0].f_smbase == 0


def test_121af960e2_is_a_firmware_version_and_revertible_from_the_later_one():
    assert not FirmwareOptions(version=EDK2_STABLE202211).has_fix(FIX_DELAY_SMM_EXIT)
    assert FirmwareOptions(version=EDK2_CURRENT).has_fix(FIX_DELAY_SMM_EXIT)
    reverted = FirmwareOptions(version=EDK2_CURRENT, reverted=frozenset({FIX_DELAY_SMM_EXIT}))
    assert not reverted.has_fix(FIX_DELAY_SMM_EXIT)
    assert get_entry(FIX_DELAY_SMM_EXIT).fix == IN_VERSION
    assert get_entry(FIX_DELAY_SMM_EXIT).scenario.firmware == EDK2_CURRENT


def test_with_fixes_puts_each_fix_where_its_step_reads_it():
    design = get_design(SHIPPED)
    d = with_fixes(design, (FIX_SKIP_KNOWN_APIC_ID, cpuhp.FIX_GET_NEXT_FW_REMOVE))
    assert d.fw.reverted == {FIX_SKIP_KNOWN_APIC_ID} and d.hw.reverted == {cpuhp.FIX_GET_NEXT_FW_REMOVE}
    assert d.reverted == (FIX_SKIP_KNOWN_APIC_ID, cpuhp.FIX_GET_NEXT_FW_REMOVE)
    assert get_entry(mch.FIX_SMBASE_MIGRATION).fix == BACKPORTED
    d = with_fixes(design, backport=(mch.FIX_SMBASE_MIGRATION,))
    assert d.backported == (mch.FIX_SMBASE_MIGRATION,) and d.reverted == ()
    d = with_fixes(design, (mch.FIX_SMBASE_MIGRATION,))
    assert d.hw.backported == frozenset() and d.reverted == (mch.FIX_SMBASE_MIGRATION,)


@pytest.mark.parametrize(
    ("revert", "backport", "message"),
    [
        (("edk2-0000000000",), (), "unknown history entry 'edk2-0000000000'"),
        ((FIX_DELAY_SMM_EXIT,), (), "firmware edk2-stable202211 does not have edk2-121af960e2"),
        ((), (cpuhp.FIX_GET_NEXT_FW_REMOVE,), "is not a later fix to backport"),
        ((mch.FIX_SMBASE_MIGRATION,), (mch.FIX_SMBASE_MIGRATION,), "cannot be both reverted and backported"),
    ],
)
def test_impossible_fix_changes_are_one_line_errors(revert, backport, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        with_fixes(get_design(SHIPPED), revert, backport)


# -- trace files ---------------------------------------------------------------------------------------
def test_a_trace_file_records_the_reverted_fixes_and_replays_with_them(tmp_path: Path, catalog):
    r = catalog["qemu-cpuhp-refuse-plug-without-smi"]
    setup = entry_setup(r.entry, reverted=True)
    path = tmp_path / "t.json"
    save(path, setup, r.reverted)
    doc = json.loads(path.read_text())
    assert doc["options"]["revert"] == ["qemu-cpuhp-refuse-plug-without-smi"]
    assert doc["options"]["smi_features"] == SMI_F_BROADCAST and doc["options"]["backport"] == []
    rep = replay(str(path))
    assert rep.setup == setup and rep.step == len(r.reverted.schedule) - 1
    # without the revert the same schedule does something else, and the file is refused
    doc["options"]["revert"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=r"trace does not reproduce|is not possible from the state"):
        replay(str(path))


def test_a_trace_file_of_a_backported_fix_replays_with_it(tmp_path: Path):
    # with the migration fix backported, migration is no attack on the window: check the benign
    # adversary pair finds what QEMU 7.2 keeps losing (firmware-remove requests) in a scenario
    # with an unplug, and that the file remembers the backport
    setup = CheckSetup(SHIPPED, Scenario(2, 2, 0, 1), ("migration",), backport=(mch.FIX_SMBASE_MIGRATION,))
    from smm_hotplug.checker.run import run_check

    res = run_check(setup)
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    assert res.backported == (mch.FIX_SMBASE_MIGRATION,)
    path = tmp_path / "t.json"
    save(path, setup, res)
    assert json.loads(path.read_text())["options"]["backport"] == [mch.FIX_SMBASE_MIGRATION]
    assert replay(str(path)).setup.backport == (mch.FIX_SMBASE_MIGRATION,)


def test_a_trace_file_with_a_malformed_revert_is_refused(tmp_path: Path, catalog):
    r = catalog["qemu-cpuhp-getnext-fw-remove"]
    path = tmp_path / "t.json"
    save(path, entry_setup(r.entry, reverted=True), r.reverted)
    doc = json.loads(path.read_text())
    for bad, message in (
        ("qemu-cpuhp-getnext-fw-remove", "options.revert"),
        ([7], "options.revert.0"),
        (["qemu-nope"], "unknown history entry 'qemu-nope'"),
    ):
        doc["options"]["revert"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(UsageError, match=message):
            replay(str(path))


# -- the command line ----------------------------------------------------------------------------------
def test_history_lists_every_entry():
    res = run_cli("history")
    assert res.returncode == 0, res.stderr
    for entry in ENTRIES.values():
        assert f"{entry.id}  ({entry.project}, {entry.date}) {entry.title}" in res.stdout
        assert f"check: smm-hotplug check --revert {entry.id}" in res.stdout
    assert res.stdout.count("  fails: ") == len(ENTRIES)
    one = run_cli("history", "qemu-cpuhp-cins-reselect", "--json")
    doc = json.loads(one.stdout)
    assert [d["id"] for d in doc] == ["qemu-cpuhp-cins-reselect"]
    assert doc[0]["property"] == "hotplug-completes" and doc[0]["scenario"]["attacks"] == ["concurrent-plug"]
    bad = run_cli("history", "qemu-nope")
    assert bad.returncode == 2 and bad.stderr.startswith(
        "smm-hotplug: error: unknown history entry 'qemu-nope'"
    )
    assert len(bad.stderr.splitlines()) == 1 and "Traceback" not in bad.stderr


def test_check_revert_runs_the_entrys_scenario_and_history_the_fixed_one():
    res = run_cli("check", "--revert", "qemu-cpuhp-getnext-fw-remove")
    assert res.returncode == 1, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == (
        "history entry qemu-cpuhp-getnext-fw-remove: -smp cpus=2,maxcpus=2, plug 0, unplug 1 "
        "(fix reverted: qemu-cpuhp-getnext-fw-remove)"
    )
    assert lines[2] == "historical fixes reverted: qemu-cpuhp-getnext-fw-remove"
    assert "VIOLATED  hotplug-completes" in res.stdout and "fw-remove pending for cpu1" in res.stdout
    fixed = run_cli("check", "--history", "qemu-cpuhp-getnext-fw-remove")
    assert fixed.returncode == 0 and "HOLDS" in fixed.stdout and "historical fixes" not in fixed.stdout


def test_explicit_options_override_the_entrys_scenario():
    res = run_cli(
        "check", "--revert", "qemu-cpuhp-getnext-fw-remove", "--boot-cpus", "3", "--max-cpus", "3", "--json"
    )
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["reverted"] == ["qemu-cpuhp-getnext-fw-remove"]
    assert doc["scenario"] == {"boot_cpus": 3, "max_cpus": 3, "plug": 0, "unplug": 1}
    assert "history entry qemu-cpuhp-getnext-fw-remove: -smp cpus=3,maxcpus=3" in res.stderr
    # two entries: the first one's scenario, both fixes reverted
    both = run_cli(
        "check", "--revert", "qemu-cpuhp-refuse-plug-without-smi", "--revert", "edk2-fe89a63da4", "--json"
    )
    doc = json.loads(both.stdout)
    assert doc["reverted"] == ["edk2-fe89a63da4", "qemu-cpuhp-refuse-plug-without-smi"]
    assert doc["scenario"]["max_cpus"] == 2 and doc["verdict"] == "violated"


def test_every_entry_is_checked_under_kvm_unless_accel_says_otherwise():
    for entry in ENTRIES.values():
        assert entry.scenario.accel == "kvm" and entry_setup(entry, reverted=True).accel == "kvm"
    doc = json.loads(run_cli("history", "edk2-cbccf99592", "--json").stdout)
    assert doc[0]["scenario"]["accel"] == "kvm"
    # --accel tcg runs the entry's scenario under TCG's CPU rules: a hot-added CPU stops at OVMF's
    # TCG hang (two CPUs share the default SMBASE's save state) before the commit's race
    res = run_cli("check", "--revert", "edk2-cbccf99592", "--accel", "tcg", "--json")
    doc = json.loads(res.stdout)
    assert res.returncode == 1 and doc["accel"] == "tcg" and doc["reverted"] == ["edk2-cbccf99592"]
    assert doc["attacks"] == ["concurrent-plug"] and doc["property"] == "save-state-exclusive"


def test_revert_and_history_combine_with_accel_and_budget(tmp_path: Path):
    path = tmp_path / "t.json"
    entry = ("qemu-q35-smbase-migration", "--accel", "tcg", "--budget", "os-code-at-default-smbase=2")
    res = run_cli("check", "--revert", *entry, "--json", "--trace-out", str(path))
    doc = json.loads(res.stdout)
    assert res.returncode == 1, res.stderr
    assert (doc["accel"], doc["property"], doc["reverted"]) == ("tcg", "smram-isolation", [entry[0]])
    saved = json.loads(path.read_text())
    assert saved["format"] == "smm-hotplug-trace/3" and saved["budgets"] == {"os-code-at-default-smbase": 2}
    assert saved["options"]["accel"] == "tcg" and saved["options"]["revert"] == [entry[0]]
    assert saved["attacks"] == ["migration", "os-code-at-default-smbase"]
    rep = replay(str(path))
    assert rep.setup.accel == "tcg" and rep.setup.budgets == (("os-code-at-default-smbase", 2),)
    assert rep.setup.revert == (entry[0],) and rep.setup.backport == ()
    fixed = run_cli("check", "--history", *entry, "--json")
    doc = json.loads(fixed.stdout)
    assert fixed.returncode == 0 and doc["verdict"] == "holds" and doc["accel"] == "tcg"
    assert doc["backported"] == [entry[0]]
    # a budget for an adversary the run does not have is refused, as without --revert; with the
    # adversary named, the entry's run gets it (os-ipi lets the OS deviate: smbase-in-tseg is a finding)
    bad = run_cli("check", "--revert", "edk2-fe89a63da4", "--budget", "os-ipi=1")
    assert bad.returncode == 2 and "os-ipi is not among the attacks" in bad.stderr
    assert len(bad.stderr.splitlines()) == 1
    ipi = run_cli(
        "check", "--revert", "edk2-fe89a63da4", "--attack", "os-ipi", "--budget", "os-ipi=1", "--json"
    )
    doc = json.loads(ipi.stdout)
    assert doc["attacks"] == ["os-ipi"] and doc["reverted"] == ["edk2-fe89a63da4"]
    assert "smbase-in-tseg" in [f["property"] for f in doc["findings"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("check", "--revert", "edk2-nope"), "unknown history entry 'edk2-nope'"),
        (("check", "--history", "edk2-nope"), "unknown history entry 'edk2-nope'"),
        (
            ("check", "--revert", "edk2-121af960e2", "--firmware", "edk2-stable202211"),
            "firmware edk2-stable202211 does not have edk2-121af960e2",
        ),
        (("check", "--revert", "edk2-fe89a63da4", "--plug", "5"), "cannot plug 5 CPUs"),
        (("check", "--fw-smi-features", "9"), "--fw-smi-features"),
        (("matrix", "--history", "--design", "sdm"), "--design cannot be combined with it"),
        (("matrix", "--history", "--plug", "1"), "--plug cannot be combined with it"),
    ],
)
def test_bad_history_input_is_a_one_line_error(args, message):
    res = run_cli(*args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def _main(monkeypatch, capsys, results, *args) -> tuple[int, str, str]:
    """The command line in this process, with the catalog's results already computed."""
    from smm_hotplug.interfaces import cli
    from smm_hotplug.interfaces.cli import history as history_cli

    monkeypatch.setattr(history_cli, "run_catalog", lambda limits, workers, log=None: results)
    with pytest.raises(SystemExit) as done:
        cli.main(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


def test_matrix_history_prints_the_catalog(monkeypatch, capsys, catalog):
    results = list(catalog.values())
    code, out, _ = _main(monkeypatch, capsys, results, "matrix", "--history")
    assert code == 0
    assert f"{len(ENTRIES)} entries: {len(ENTRIES)} rediscovered and holding with the fix" in out
    assert out.count("rediscovered") == len(ENTRIES) + 1
    code, out, _ = _main(monkeypatch, capsys, results, "matrix", "--history", "--json")
    doc = json.loads(out)
    assert code == 0 and [d["id"] for d in doc] == list(ENTRIES)
    assert all(d["rediscovered"] and d["fixed_holds"] and d["problems"] == [] for d in doc)
    # an entry that is not as claimed fails the run, with a line naming it
    broken = [EntryResult(r.entry, r.fixed, r.reverted) if i == 0 else r for i, r in enumerate(results)]
    code, _, err = _main(monkeypatch, capsys, broken, "matrix", "--history")
    assert code == 1 and "smm-hotplug: edk2-020bb4b46d: with the fix reverted expected" in err


def test_the_report_shows_each_entry_with_its_trace(monkeypatch, capsys, tmp_path: Path, catalog):
    out_file = tmp_path / "r.html"
    args = (
        "report",
        "-o",
        str(out_file),
        "--design",
        "sdm",
        "--attack",
        "none",
        "--plug",
        "1",
        "--unplug",
        "0",
    )
    code, out, _ = _main(monkeypatch, capsys, list(catalog.values()), *args)
    assert code == 0
    assert f"{len(ENTRIES)} historical bugs, each with its fix reverted" in out
    html = out_file.read_text()
    assert '<table class="matrix" id="history">' in html
    assert "under the accelerator its scenario names (kvm), whichever the matrix uses" in html
    for entry_id, r in catalog.items():
        assert f'<h2 id="history-{entry_id}">history {entry_id}, fix reverted: {r.entry.prop}</h2>' in html
        assert f'href="#history-{entry_id}"' in html
    assert html.count('class="sequence"') == len(ENTRIES) + 1  # + the benign hot-add
    code, out, _ = _main(monkeypatch, capsys, [], *args, "--no-history")
    assert code == 0 and "historical" not in out and 'id="history"' not in out_file.read_text()
