"""The checker's command line as a user runs it: catalogues, check, witness, matrix, trace files."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli as run

from smm_hotplug.adversaries.catalog import ADVERSARIES
from smm_hotplug.checker.cases import HARD_CASES
from smm_hotplug.checker.model_id import model_digest
from smm_hotplug.checker.traces import FORMAT
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.invariants import PROPERTIES

SMALL = ["--boot-cpus", "1", "--max-cpus", "2", "--plug", "1", "--unplug", "0"]
# `matrix --json` of SMALL with --max-states 3000, trimmed to what --expect compares.
EXPECTED = Path(__file__).resolve().parent / "expected" / "matrix-small.json"


def _expected() -> list[dict]:
    return json.loads(EXPECTED.read_text())


@pytest.mark.parametrize(
    "command,ids",
    [
        ("designs", list(DESIGNS)),
        ("attacks", [*ADVERSARIES, "all"]),
        ("properties", list(PROPERTIES)),
        ("cases", list(HARD_CASES)),
    ],
)
def test_catalogues_list_every_id_with_a_description(command, ids):
    out = run(command)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ids
    assert all(len(line.split()) > 3 for line in lines)


def test_check_proves_the_shipped_design_and_names_the_hard_cases_it_went_through():
    out = run("check", "--attack", "concurrent-plug")
    assert out.returncode == 0, out.stderr
    assert "HOLDS" in out.stdout
    assert re.search(r"plug-after-broadcast \(\d+ steps\)", out.stdout.replace("\n", " "))


def test_check_json_and_trace_file_replay_the_shortest_attack(tmp_path):
    trace = tmp_path / "attack.json"
    attack = "os-code-at-default-smbase"
    out = run("check", "--design", "sdm", "--attack", attack, "--json", "--trace-out", str(trace))
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    keys = {"design", "attacks", "verdict", "property", "trace", "states", "transitions", "seconds"}
    assert keys <= set(doc)
    assert (doc["design"], doc["attacks"], doc["verdict"]) == ("sdm", [attack], "violated")
    assert doc["property"] == "smm-code-integrity" and doc["bound"] is None
    assert re.fullmatch(r"cpu\d executes os.payload at 0x38000 in SMM, written by os", doc["detail"])
    assert all({"actor", "description"} <= set(step) for step in doc["trace"])
    assert doc["cases"]["plug-before-broadcast"] is not None

    replay = run("simulate", "--replay", str(trace), "--json")
    assert replay.returncode == 1, replay.stderr
    sim = json.loads(replay.stdout)
    last = len(doc["trace"]) - 1  # the violation is at the trace's last step
    assert sim["steps"] == len(doc["trace"]) == doc["depth"]
    assert sim["invariants"]["smm-code-integrity"] == {
        "status": "violated",
        "first": {"step": last, "text": doc["detail"]},
    }
    assert sim["replay"]["reproduced"] and (sim["replay"]["property"], sim["replay"]["step"]) == (
        "smm-code-integrity",
        last,
    )


def test_witness_prints_saves_and_replays_the_shortest_schedule_into_a_hard_case(tmp_path):
    trace = tmp_path / "gate.json"
    out = run("witness", "started-cpu-at-gate", "--attack", "os-early-init-sipi", "--trace-out", str(trace))
    assert out.returncode == 0, out.stderr
    assert "REACHED" in out.stdout and "waits at the closed gate" in out.stdout
    saved = json.loads(trace.read_text())
    plugged = next(choice for actor, choice in saved["schedule"] if actor == "mgmt")
    assert saved["verdict"] == "reached" and saved["schedule"][-1][0] == f"cpu{plugged}"
    replay = run("simulate", "--replay", str(trace))
    assert replay.returncode == 0, replay.stderr  # reproduces the case; the witness judged nothing
    assert "SMI entry: SMBASE 0x30000" in replay.stdout

    benign = run("witness", "started-cpu-at-gate")
    assert benign.returncode == 1 and "UNREACHABLE" in benign.stdout
    stopped = run("witness", "burst-after-scan", "--attack", "concurrent-plug", "--max-states", "50")
    assert stopped.returncode == 2 and "INCOMPLETE" in stopped.stdout


BIG = ["--boot-cpus", "4", "--max-cpus", "8", "--plug", "4", "--attack", "all"]


def test_a_memory_or_time_limit_ends_a_check_with_its_bound_not_a_crash():
    out = run("check", *BIG, "--max-memory", "1")
    assert out.returncode == 2, out.stderr
    assert "INCOMPLETE" in out.stdout and "stopped at 1 MiB of memory" in out.stdout
    assert "no schedule of up to" in out.stdout and not out.stderr
    timed = run("check", *BIG, "--max-seconds", "0.5", "--json")
    assert timed.returncode == 2
    doc = json.loads(timed.stdout)
    assert doc["verdict"] == "incomplete" and "stopped after 0.5 s" in doc["detail"]
    assert doc["stopped"] == "after 0.5 s"
    assert doc["bound"] == doc["depth"] > 0


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_ctrl_c_ends_a_check_with_its_bound(workers):
    proc = subprocess.Popen(
        [sys.executable, "-m", "smm_hotplug.interfaces.cli", "check", *BIG, *workers],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # well into the search (it would run for hours)
    proc.send_signal(signal.SIGINT)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "INCOMPLETE" in stdout and "stopped when interrupted (Ctrl-C)" in stdout


def test_check_on_two_workers_with_fingerprints_prints_the_same_result_and_tlcs_estimate():
    tamper = ("--attack", "os-hotplug-register-tamper")  # holds, with findings
    plain = json.loads(run("check", *SMALL, *tamper, "--json").stdout)
    shared = run("check", *SMALL, *tamper, "--json", "--workers", "2", "--fingerprint")
    assert shared.returncode == 0, shared.stderr
    doc = json.loads(shared.stdout)
    keys = ("verdict", "property", "states", "transitions", "depth", "cases", "findings", "undecided")
    assert {k: doc[k] for k in keys} == {k: plain[k] for k in keys}
    assert plain["fingerprint_collision_probability"] is None
    # TLC: d * (g - d) / 2^64, g = states generated (the initial state and every transition)
    assert (
        doc["fingerprint_collision_probability"]
        == doc["states"] * (doc["transitions"] + 1 - doc["states"]) / 2**64
    )
    assert plain["verdict"] == "holds" and plain["findings"]
    text = run("check", *SMALL, *tamper, "--fingerprint").stdout
    assert "calculated (optimistic)" in text and "based on the actual fingerprints" in text


def test_matrix_json_has_every_design_against_every_column():
    out = run("matrix", *SMALL, "--json", "--max-states", "3000", "--workers", "2")
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert len(cells) == len(DESIGNS) * (len(ADVERSARIES) + 2)
    by = {(c["design"], tuple(c["attacks"])): c for c in cells}
    sdm = by[("sdm", ("os-code-at-default-smbase",))]
    assert (sdm["verdict"], sdm["property"]) == ("violated", "smm-code-integrity")
    assert by[("smram-default-smbase", ())]["verdict"] == "holds"
    assert all(c["bound"] is not None for c in cells if c["verdict"] == "incomplete")
    # every cell's verdict and property is the committed one (tests/expected/matrix-small.json)
    expected = {(c["design"], tuple(c["attacks"])): (c["verdict"], c["property"]) for c in _expected()}
    assert {key: (c["verdict"], c["property"]) for key, c in by.items()} == expected


def _write(path, text):
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["check", "--design", "nonsense"], "unknown design 'nonsense'"),
        (["check", "--attack", "nonsense"], "unknown attack 'nonsense'"),
        (["check", "--plug", "5"], "cannot plug 5 CPUs"),
        (["check", "--boot-cpus", "3", "--max-cpus", "2"], "smaller than --boot-cpus"),
        (["check", "--max-states", "0"], "--max-states must be positive"),
        (["check", "--max-seconds", "0"], "--max-seconds must be positive"),
        (["check", "--max-seconds", "nan"], "--max-seconds must be positive"),
        (["witness", "burst-after-scan", "--max-memory", "-5"], "--max-memory must be positive"),
        (["matrix", "--max-seconds", "-1"], "--max-seconds must be positive"),
        (["check", "--max-depth", "0"], "--max-depth must be positive"),
        (["check", "--trace-out", "/nonexistent/dir/t.json"], "does not exist"),
        (["matrix", "--workers", "0"], "--workers must be positive"),
        (["check", "--workers", "0"], "--workers must be positive"),
        (["check", "--cluster", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler"),
        (["matrix", "--unplug", "7"], "cannot remove 7 CPUs"),
        (["witness", "nonsense"], "unknown hard case 'nonsense'"),
        (["witness", "burst-after-scan", "--design", "nonsense"], "unknown design"),
        (["simulate", "--replay", "/nonexistent/trace.json"], "no such file"),
        (["simulate", "--replay", "NOTJSON"], "is not JSON"),
        (["simulate", "--replay", "WRONGDOC"], "b.json: tool_version: is missing (and 11 more problems)"),
        (["simulate", "--replay", "BADSTEP"], "does not fit this model: step 0 (mgmt/0)"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, needle):
    files = {
        "NOTJSON": _write(tmp_path / "a.json", "{not json"),
        "WRONGDOC": _write(tmp_path / "b.json", json.dumps({"format": FORMAT, "design": "sdm"})),
        "BADSTEP": _write(
            tmp_path / "c.json",
            json.dumps(
                {
                    "format": FORMAT,
                    "tool_version": "0.1.0",
                    "model_digest": model_digest(),
                    "design": "sdm",
                    "options": {},
                    "scenario": {"boot_cpus": 2, "max_cpus": 4, "plug": 2, "unplug": 1},
                    "attacks": [],
                    "judged": list(PROPERTIES),
                    "verdict": "violated",
                    "property": "smm-code-integrity",
                    "case": None,
                    "detail": "-",
                    "trace": [{"step": 0, "actor": "mgmt", "choice": 0, "description": "-"}],
                    "schedule": [["mgmt", 0]],
                }
            ),
        ),
    }
    out = run(*[files.get(a, a) for a in args])
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr
