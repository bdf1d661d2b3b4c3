"""Live migration as QEMU 7.2 does it (hw.migration), and the `migration` timing adversary."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from conformance.targets import Target, qemu_available

from smm_hotplug.adversaries.catalog import ADVERSARIES, resolve
from smm_hotplug.checker.run import run_check
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.hw import cpuhp, lpc, mch, migration
from smm_hotplug.hw.config import platform_config
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, RAM
from smm_hotplug.interfaces.qemu.qtest import QtestSession
from smm_hotplug.interfaces.qemu.session import QemuMachine
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario, System

SHIPPED = DESIGNS["smram-default-smbase"]

# What the destination loses or recomputes; every other field of the machine travels unchanged.
LOST = {("mch", "f_smbase"), ("mch", "f_smbase_wmask"), ("cpuhp", "fw_remove")}


def _differences(before, after) -> set[tuple[str, str]]:
    out = set()
    for name in before._fields:
        a, b = getattr(before, name), getattr(after, name)
        if a == b:
            continue
        if hasattr(a, "_fields"):
            out |= {(name, f) for f in a._fields if getattr(a, f) != getattr(b, f)}
        else:
            out.add((name, "*"))
    return out


@pytest.mark.parametrize("design", ["smram-default-smbase", "sdm"])
def test_only_what_qemu_does_not_migrate_changes_at_any_moment(design):
    system = System(DESIGNS[design], Scenario(boot_cpus=2, max_cpus=4, plug=2, unplug=2))
    res = simulate(system, seed=2)
    assert res.outcome == "finished"
    w, seen = system.initial(), set()
    for st in res.steps:
        w = system.replay_move(w, st.actor, st.choice).world
        after = system.plat.migrate(w.m, Log())
        changed = _differences(w.m, after)
        assert changed <= LOST, changed
        seen |= changed
        assert system.plat.migrate(after, Log()) == after  # a destination migrates to itself
        if ("cpuhp", "fw_remove") in changed:
            assert after.cpuhp.fw_remove == 0 and w.m.cpuhp.fw_remove
    if design == "sdm":  # no window at the default SMBASE: mch_update_smbase_smram returns at once
        assert seen == {("cpuhp", "fw_remove")}
    else:
        assert seen == LOST


def test_the_locked_window_is_unlocked_on_the_destination():
    system = System(SHIPPED, Scenario(boot_cpus=1, max_cpus=2, plug=1, unplug=0))
    w = system.initial()
    for st in simulate(system, seed=0).steps:
        w = system.replay_move(w, st.actor, st.choice).world
    m = w.m
    assert mch.window_locked(m.mch) and system.plat.decode(m, 0x38000, CPU)[0] != RAM
    log = Log(record=True)
    after = migration.migrate(system.plat, m, log)
    assert (after.mch.f_smbase, after.mch.f_smbase_wmask) == (0, 0xFF)
    assert system.plat.decode(after, 0x38000, CPU)[0] == RAM  # OS and DMA reach the window
    assert after.mem is m.mem and after.cpus == m.cpus and after.lpc == m.lpc
    assert "no longer locked SMRAM" in log.events[0].text


# One session against QEMU 7.2 and the model: lock the window, set a firmware-remove bit and a
# remove event, migrate, look again.  Answers recorded from Debian's QEMU 7.2.
BEFORE = [
    ("outl 0xcf8 0x8000009c", "OK"),
    ("outb 0xcfc 0xff", "OK"),
    ("outb 0xcfc 0x2", "OK"),
    ("inb 0xcfc", "OK 0x0002"),
    ("writeb 0x38000 0x5a", "OK"),
    ("readb 0x38000", "OK 0x00000000000000ff"),
    ("outb 0xcd8 0x0", "OK"),
    ("outl 0xcd8 0x2", "OK"),
    ("outb 0xcdc 0x10", "OK"),
    ("inb 0xcdc", "OK 0x0011"),
    ("outl 0xcd8 0x1", "OK"),
    ("inb 0xcdc", "OK 0x0005"),
]
AFTER = [
    ("outl 0xcf8 0x8000009c", "OK"),
    ("inb 0xcfc", "OK 0x0000"),
    ("outb 0xcfc 0x2", "OK"),
    ("inb 0xcfc", "OK 0x0000"),
    ("writeb 0x38000 0x5a", "OK"),
    ("readb 0x38000", "OK 0x000000000000005a"),
    ("inl 0xce0", "OK 0x0001"),
    ("outl 0xcd8 0x2", "OK"),
    ("inb 0xcdc", "OK 0x0001"),
    ("outl 0xcd8 0x1", "OK"),
    ("inb 0xcdc", "OK 0x0005"),
    ("outl 0xcf8 0x8000009c", "OK"),
    ("outb 0xcfc 0xff", "OK"),
    ("inb 0xcfc", "OK 0x0001"),
    ("outb 0xcfc 0x2", "OK"),
    ("inb 0xcfc", "OK 0x0002"),
    ("writeb 0x38000 0x11", "OK"),
    ("readb 0x38000", "OK 0x00000000000000ff"),
]
CPU2 = {"socket-id": 0, "core-id": 2, "thread-id": 0}


def _model_session() -> list[tuple[str, str]]:
    qm = QemuMachine(platform_config(2, 4), firmware=True)
    qt = QtestSession(qm)
    qm.plug(2)
    out = [(line, qt.handle(line)[-1]) for line, _ in BEFORE[:10]]
    qm.unplug_request(1)  # device_del /machine/unattached/device[2], the boot AP
    out += [(line, qt.handle(line)[-1]) for line, _ in BEFORE[10:]]
    qm.m = qm.plat.migrate(qm.m, Log())
    return out + [(line, qt.handle(line)[-1]) for line, _ in AFTER]


def _qemu_session() -> list[tuple[str, str]]:
    args = ["-machine", "q35,smm=on", "-smp", "2,maxcpus=4"]
    stream = Path(tempfile.mkdtemp(prefix="smmhp-")) / "vm.mig"
    src = Target("qemu", args)
    try:
        assert "return" in src.qmp_cmd("device_add", driver="qemu64-x86_64-cpu", id="cpu2", **CPU2)
        out = [(line, src.qtest(line)) for line, _ in BEFORE[:10]]
        assert "return" in src.qmp_cmd("device_del", id="/machine/unattached/device[2]")
        out += [(line, src.qtest(line)) for line, _ in BEFORE[10:]]
        src.qmp_cmd("migrate", uri=f"exec:cat > {stream}")
        for _ in range(100):
            if src.qmp_cmd("query-migrate")["return"].get("status") == "completed":
                break
            time.sleep(0.05)
    finally:
        src.close()
    device = "qemu64-x86_64-cpu,id=cpu2," + ",".join(f"{k}={v}" for k, v in CPU2.items())
    dst = Target("qemu", [*args, "-device", device, "-incoming", f"exec:cat {stream}"])
    try:
        return out + [(line, dst.qtest(line)) for line, _ in AFTER]
    finally:
        dst.close()


def test_the_model_migrates_as_recorded_from_qemu():
    assert _model_session() == BEFORE + AFTER


@pytest.mark.requires("qemu")  # a skip fails where SMM_HOTPLUG_REQUIRE_QEMU=1 (.ci/run)
def test_the_model_migrates_as_live_qemu_does():
    if not qemu_available():
        pytest.skip("qemu-system-x86_64 not installed; compared with the recorded answers instead")
    assert _model_session() == _qemu_session()


def test_vmstate_subsections_are_sent_only_when_needed():
    assert "smi_negotiated" not in lpc.VMSTATE.sent(lpc.Lpc())
    assert "smi_negotiated" in lpc.VMSTATE.sent(lpc.Lpc(smi_requested=1))
    assert cpuhp.VMSTATE.sent(cpuhp.CpuHp()) == ()  # legacy: no ich9_pm/cpuhp subsection
    assert "fw_remove" not in cpuhp.VMSTATE.sent(cpuhp.CpuHp(modern=True))


def test_migration_loses_a_removal_the_firmware_has_not_collected():
    res = run_check(CheckSetup("smram-default-smbase", Scenario(), ("migration",)))
    assert (res.verdict, res.prop) == ("violated", "hotplug-completes")
    step = next(t for t in res.trace if t.actor == "adv:migration")
    assert "firmware-remove request lost for selector" in step.text
    before = res.trace[: res.trace.index(step)]
    assert any("_EJ0" in t.text and "fw_remove + SMI" in t.text for t in before)  # the OS had asked


def test_migration_opens_the_window_to_the_os_and_dma():
    for attack in ("os-code-at-default-smbase", "dma-code-at-default-smbase"):
        setup = CheckSetup("smram-default-smbase", Scenario(1, 2, 1, 0), ("migration", attack))
        res = run_check(setup)
        assert (res.verdict, res.prop) == ("violated", "smram-isolation")
        actors = [t.actor for t in res.trace]
        assert actors.index("adv:migration") < actors.index(f"adv:{attack}") == len(actors) - 1
        alone = run_check(CheckSetup("smram-default-smbase", Scenario(1, 2, 1, 0), (attack,)))
        assert alone.verdict == "holds"


def test_migration_is_its_own_column_not_part_of_all():
    assert ADVERSARIES["migration"] not in resolve(["all"])
    assert ADVERSARIES["migration"] in resolve(["all", "migration"])
    assert len(resolve(["all", "migration"])) == len(ADVERSARIES)


def test_the_cli_lists_and_runs_migration():
    from conftest import run_cli

    listed = run_cli("attacks")
    assert "migration " in listed.stdout and "but migration" in listed.stdout
    args = ("--boot-cpus", "1", "--max-cpus", "2", "--plug", "1", "--unplug", "0")
    out = run_cli("check", "--attack", "migration", *args)
    assert out.returncode == 0 and "HOLDS" in out.stdout, out.stdout  # no removal to lose
