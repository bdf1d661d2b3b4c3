"""The command line as a user drives it: output, JSON and one-line errors with exit status 2."""

from __future__ import annotations

import json
import re

import pytest
from conftest import run_cli as run


def test_simulate_default_prints_timeline_summary_and_invariants():
    out = run("simulate")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "SMI entry: SMBASE 0x30000" in text
    assert "RSM: SMBASE 0x30000 -> 0x700c000" in text
    assert "RSM: SMBASE 0x30000 -> 0x700e000" in text
    # the operator's choice of CPU to remove comes from the seed: the one it asked for is deleted
    removed = re.search(r"device_del: unplug of (cpu\d) requested", text)[1]  # type: ignore[index]
    assert f"DEVICE_DELETED {removed}" in text and removed != "cpu0"
    assert "hotplug-completes" in text and "violated" not in text


def test_simulate_verbose_shows_register_accesses():
    out = run("simulate", "--verbose", "--plug", "1", "--unplug", "0")
    assert out.returncode == 0
    assert "outl 0x0cd8" in out.stdout and "APM_CNT <- 0x04" in out.stdout


def test_simulate_json_is_one_document():
    out = run("simulate", "--json", "--seed", "3")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "finished"
    assert all(p["status"] == "holds" for p in doc["invariants"].values())
    cpus = {c["slot"]: c for c in doc["cpus"]}
    present = [s for s, c in cpus.items() if c["present"]]
    assert len(present) == 3 and 0 in present  # 2 at boot + 2 plugged - 1 removed
    assert sorted(cpus[s]["tile"] for s in present) == sorted({cpus[s]["tile"] for s in present})
    assert any(e["kind"] == "smi" for e in doc["timeline"])


def test_violations_exit_1():
    out = run("simulate", "--design", "preinit-spares")
    assert out.returncode == 1
    assert "violated" in out.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["simulate", "--plug", "3"], "cannot plug 3 CPUs"),
        (["simulate", "--unplug", "9"], "cannot remove 9 CPUs"),
        (["simulate", "--plug", "-1"], "must not be negative"),
        (["simulate", "--boot-cpus", "0"], "at least 1"),
        (["simulate", "--max-cpus", "1"], "smaller than --boot-cpus"),
        (["simulate", "--design", "nonsense"], "unknown design"),
        (["simulate", "--seed", "x"], "not a valid integer"),
        (["simulate", "--frobnicate"], "No such option"),
        (["frobnicate"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle):
    out = run(*args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
