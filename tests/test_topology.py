"""-smp topologies: APIC IDs as QEMU 7.2 computes them, its completion and refusals, and the
firmware and OS using selectors and APIC IDs where each belongs."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conformance.targets import QEMU, qemu_available
from conftest import run_cli

from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import kernel
from smm_hotplug.hw import fw_cfg
from smm_hotplug.hw.config import Topology, parse_smp, platform_config, smp_config
from smm_hotplug.interfaces.qemu.session import QemuMachine
from smm_hotplug.invariants import firmware_table
from smm_hotplug.simulator import simulate
from smm_hotplug.world import Scenario, System

REQUIRE_QEMU = os.environ.get("SMM_HOTPLUG_REQUIRE_QEMU") == "1"
SHIPPED = DESIGNS["smram-default-smbase"]

# APIC ID of each CPU index, read from QEMU 7.2 (qom-get apic-id after device_add of every slot).
QEMU_APIC_IDS = {
    "2,maxcpus=6,sockets=2,cores=3": [0, 1, 2, 4, 5, 6],
    "1,maxcpus=18,sockets=2,dies=3,cores=3": [0, 1, 2, 4, 5, 6, 8, 9, 10, 16, 17, 18, 20, 21, 22, 24, 25, 26],
    "cpus=2,maxcpus=12,dies=3,cores=2,threads=2": list(range(12)),
    "1,maxcpus=6,cores=3,threads=2": [0, 1, 2, 3, 4, 5],
    "1,maxcpus=10,sockets=2,cores=5": [0, 1, 2, 3, 4, 8, 9, 10, 11, 12],
}


@pytest.mark.parametrize("spec", list(QEMU_APIC_IDS))
def test_apic_ids_are_sparse_as_qemu_computes_them(spec):
    smp = parse_smp(spec)
    cfg = platform_config(smp.cpus, smp.maxcpus, topology=smp.topology)
    assert list(cfg.apic_ids) == QEMU_APIC_IDS[spec]
    for index, apic in enumerate(cfg.apic_ids):
        assert cfg.slot_of_apic(apic) == index
        assert smp.topology.index_of(*smp.topology.ids_of_apic(apic)) == index
    assert cfg.topology.apic_id_limit == QEMU_APIC_IDS[spec][-1] + 1


# (-smp, (cpus, maxcpus, sockets, dies, cores, threads)) or QEMU 7.2's message, as it prints them.
SMP_CASES = [
    ("4", (4, 4, 1, 1, 4, 1)),
    ("2,maxcpus=6,sockets=2", (2, 6, 2, 1, 3, 1)),
    ("sockets=2,dies=2", (4, 4, 2, 2, 1, 1)),
    ("4,dies=2", (4, 4, 1, 2, 2, 1)),
    ("1,maxcpus=8,cores=2,threads=2", (1, 8, 2, 1, 2, 2)),
    ("4,clusters=1", (4, 4, 1, 1, 4, 1)),
    (
        "2,sockets=2,cores=2",
        "Invalid CPU topology: product of the hierarchy must match maxcpus: "
        "sockets (2) * dies (1) * cores (2) * threads (0) != maxcpus (2)",
    ),
    (
        "4,maxcpus=2",
        "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
        "sockets (1) * dies (1) * cores (2) * threads (1) == maxcpus (2) < smp_cpus (4)",
    ),
    (
        "4,threads=3",
        "Invalid CPU topology: product of the hierarchy must match maxcpus: "
        "sockets (1) * dies (1) * cores (1) * threads (3) != maxcpus (4)",
    ),
    ("4,clusters=2", "clusters not supported by this machine's CPU topology"),
    ("4,bogus=1", "Parameter 'smp.bogus' is unexpected"),
    ("foo", "Parameter 'smp.cpus' expects integer"),
    ("4,8", "-smp 4,8: Invalid parameter '8'"),
    ("300", "Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-q35-7.2' is 288"),
    ("4,maxcpus=256", "current -smp configuration requires kernel irqchip and X2APIC API support."),
]


@pytest.mark.parametrize(("spec", "expected"), SMP_CASES)
def test_smp_is_completed_and_refused_as_qemu_does(spec, expected):
    if isinstance(expected, str):
        with pytest.raises(UsageError) as err:
            parse_smp(spec)
        assert str(err.value) == expected
    else:
        smp = parse_smp(spec)
        assert (smp.cpus, smp.maxcpus, *smp.topology) == expected


def test_zero_counts_are_deprecated_and_count_as_omitted():
    warn: list[str] = []
    smp = smp_config({"cpus": 4, "cores": 0}, warn)
    assert (smp.cpus, smp.maxcpus, smp.topology) == (4, 4, Topology(cores=4))
    assert warn == [
        "warning: Deprecated CPU topology (considered invalid): "
        "CPU topology parameters must be greater than zero"
    ]


def _need_qemu() -> None:
    if not qemu_available():
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (SMM_HOTPLUG_REQUIRE_QEMU=1) but not installed")
        pytest.skip("qemu-system-x86_64 not installed")


def _qemu_apic_ids(spec: str) -> list[int]:
    """Start QEMU paused, device_add every free slot, and read each CPU's apic-id property."""
    from qemu.qmp import ConnectError
    from qemu.qmp.legacy import QEMUMonitorProtocol

    sock = str(Path(tempfile.mkdtemp(prefix="smmhp-")) / "qmp.sock")
    cmd = [QEMU, "-machine", "q35,smm=on", "-smp", spec, "-display", "none", "-nodefaults", "-S"]
    proc = subprocess.Popen([*cmd, "-qmp", f"unix:{sock},server=on,wait=off"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while not os.path.exists(sock):
            assert proc.poll() is None and time.time() < deadline, "QEMU did not start"
            time.sleep(0.02)
        # The socket file exists a moment before QEMU accepts on it: retry the connection briefly.
        while True:
            qmp = QEMUMonitorProtocol(sock)
            try:
                qmp.connect(negotiate=True)
                break
            except (OSError, EOFError, ConnectError):
                qmp.close()
                assert proc.poll() is None and time.time() < deadline, "QEMU did not accept QMP"
                time.sleep(0.05)

        def cmd(execute: str, **arguments: object) -> object:
            return qmp.cmd_obj({"execute": execute, "arguments": arguments})["return"]

        for i, cpu in enumerate(cmd("query-hotpluggable-cpus")):
            if "qom-path" not in cpu:
                cmd("device_add", driver=cpu["type"], id=f"c{i}", **cpu["props"])
        ids = {
            cpu["cpu-index"]: cmd("qom-get", path=cpu["qom-path"], property="apic-id")
            for cpu in cmd("query-cpus-fast")
        }
        qmp.close()  # no "quit": QEMU may close the socket before its answer is read; it is killed below
        return [ids[i] for i in sorted(ids)]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("spec", ["2,maxcpus=6,sockets=2,cores=3", "1,maxcpus=18,sockets=2,dies=3,cores=3"])
def test_apic_ids_match_live_qemu(spec):
    _need_qemu()
    assert _qemu_apic_ids(spec) == QEMU_APIC_IDS[spec]


@pytest.mark.parametrize("spec", [s for s, e in SMP_CASES if isinstance(e, str)])
def test_smp_refusals_match_live_qemu(spec):
    _need_qemu()
    out = subprocess.run(
        [QEMU, "-machine", "q35,smm=on", "-smp", spec, "-display", "none", "-nodefaults", "-S"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 1
    with pytest.raises(UsageError) as err:
        parse_smp(spec)
    assert out.stderr.strip() == f"{QEMU}: {err.value}"


def test_fw_cfg_max_cpus_is_the_apic_id_limit():
    smp = parse_smp("1,maxcpus=6,sockets=2,cores=3")
    qm = QemuMachine(platform_config(smp.cpus, smp.maxcpus, topology=smp.topology))
    qm.outw(fw_cfg.PORT_SELECTOR, fw_cfg.KEY_MAX_CPUS)
    assert qm.inb(fw_cfg.PORT_DATA) | qm.inb(fw_cfg.PORT_DATA) << 8 == 7  # APIC IDs 0-2, 4-6


SPARSE = "2,maxcpus=6,sockets=2,cores=3"  # APIC IDs 0, 1, 2, 4, 5, 6


@pytest.mark.parametrize("seed", range(4))
def test_firmware_and_os_use_apic_ids_and_selectors_on_a_sparse_topology(seed):
    """Every CPU is relocated, onlined and removed by the right name: the firmware records the
    APIC ID the hotplug block reports for a selector and ejects by selector; the OS starts a CPU
    at the APIC ID of its selector and marks it online under its APIC ID."""
    system = System(SHIPPED, Scenario.from_smp(parse_smp(SPARSE), plug=3, unplug=2))
    res = simulate(system, seed=seed)
    assert res.outcome == "finished" and res.ok, res.property_status()
    cfg, m = system.cfg, res.final.m
    lay = FW.smram_layout(cfg)
    table = firmware_table(system.plat, m)
    present = [s for s, c in enumerate(m.cpus) if c.present]
    assert len(present) == 2 + 3 - 2
    assert sorted(a for a in table if a != FW.INVALID_APIC_ID) == sorted(cfg.apic_id(s) for s in present)
    for slot in present:
        apic = cfg.apic_id(slot)
        assert m.cpus[slot].smbase == lay.tile_smbase(table.index(apic))
        assert system.plat.mem_read(m, kernel.online_flag(apic), 1, "cpu") == 1
    ejected = [ev.data[1] for st in res.steps for ev in st.events if ev.data[:1] == ("DEVICE_DELETED",)]
    assert sorted(ejected) == sorted(res.final.unplugged)
    # What the OS onlined is named by APIC ID, and some of them are beyond the CPU count.
    onlined = [ev.text for st in res.steps for ev in st.events if "onlining CPU" in ev.text]
    assert any(f"(APIC ID {cfg.apic_id(s)})" in t for t in onlined for s in (3, 4, 5))


def test_cli_takes_smp_on_every_command_and_keeps_it_in_traces(tmp_path):
    sim = run_cli("simulate", "--smp", SPARSE, "--plug", "2", "--unplug", "1", "--json")
    assert sim.returncode == 0, sim.stderr
    doc = json.loads(sim.stdout)
    assert doc["scenario"]["smp"] == "cpus=2,maxcpus=6,sockets=2,dies=1,cores=3,threads=1"
    assert [row["apic_id"] for row in doc["cpus"]] == [0, 1, 2, 4, 5, 6]
    # --boot-cpus/--max-cpus are shorthands for cpus= and maxcpus=
    short = run_cli("simulate", "--boot-cpus", "1", "--max-cpus", "3", "--json", "--seed", "5")
    long = run_cli(
        "simulate", "--smp", "cpus=1,maxcpus=3,sockets=1,dies=1,cores=3,threads=1", "--json", "--seed", "5"
    )
    assert json.loads(short.stdout)["timeline"] == json.loads(long.stdout)["timeline"]
    mixed = run_cli("simulate", "--boot-cpus", "1", "--smp", "maxcpus=6,sockets=2,cores=3", "--json")
    assert json.loads(mixed.stdout)["scenario"]["boot_cpus"] == 1

    trace = tmp_path / "t.json"
    chk = run_cli(
        "check",
        "--design",
        "sdm",
        "--attack",
        "os-code-at-default-smbase",
        "--smp",
        SPARSE,
        "--plug",
        "1",
        "--unplug",
        "0",
        "--trace-out",
        str(trace),
    )
    assert chk.returncode == 1, chk.stderr
    assert json.loads(trace.read_text())["scenario"]["topology"] == {
        "sockets": 2,
        "dies": 1,
        "cores": 3,
        "threads": 1,
    }
    replay = run_cli("simulate", "--replay", str(trace), "--json")
    assert replay.returncode == 1 and [r["apic_id"] for r in json.loads(replay.stdout)["cpus"]][3:] == [
        4,
        5,
        6,
    ]

    wit = run_cli("witness", "plug-before-broadcast", "--smp", SPARSE, "--plug", "1", "--unplug", "0")
    assert wit.returncode == 0, wit.stderr
    rep = run_cli(
        "report",
        "--design",
        "sdm",
        "--attack",
        "none",
        "--smp",
        SPARSE,
        "--plug",
        "1",
        "--unplug",
        "0",
        "--no-history",
        "-o",
        str(tmp_path / "r.html"),
    )
    assert rep.returncode == 0, rep.stderr
    assert "-smp cpus=2,maxcpus=6,sockets=2,dies=1,cores=3,threads=1" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--smp", "4,maxcpus=256"],
            "current -smp configuration requires kernel irqchip and X2APIC API support.",
        ),
        (["--smp", "2,sockets=2,cores=2"], "product of the hierarchy must match maxcpus"),
        (["--smp", "1,maxcpus=128"], "at most 64 possible CPUs are modelled"),
        (["--smp", "2,maxcpus=4", "--boot-cpus", "3"], "--boot-cpus 3 contradicts --smp cpus=2"),
        (["--smp", "cpus=x"], "Parameter 'smp.cpus' expects integer"),
    ],
)
def test_cli_refuses_a_bad_smp_in_one_line(args, message):
    for command in ("simulate", "check", "matrix"):
        out = run_cli(command, *args)
        assert out.returncode == 2 and message in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_the_checker_on_a_sparse_topology():
    """Adversaries name CPUs by APIC ID too: the shipped design holds against an OS that starts
    a hot-added CPU early, and the SDM method falls with the victim named by its APIC ID."""
    from smm_hotplug.checker.run import run_check
    from smm_hotplug.checker.traces import CheckSetup

    scenario = Scenario.from_smp(parse_smp("1,maxcpus=6,sockets=2,cores=3"), plug=1, unplug=0)
    held = run_check(CheckSetup("smram-default-smbase", scenario, ("os-early-init-sipi",)))
    assert held.verdict == "holds" and held.cases["started-cpu-at-gate"] is not None
    res = run_check(CheckSetup("sdm", scenario, ("os-code-at-default-smbase",)))
    assert (res.verdict, res.prop) == ("violated", "smm-code-integrity")
    slot = next(t.choice for t in res.trace if t.actor == "mgmt")
    apic = scenario.topology.apic_id(slot)
    assert any(f"relocating APIC ID {apic} " in t.text for t in res.trace)
