"""The CLI in pipes, scripts and under Ctrl-C, and the results CI systems read (JUnit XML,
matrix --expect)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli as run
from junitparser import Error, Failure, JUnitXml, Properties

from smm_hotplug.adversaries.catalog import ADVERSARIES
from smm_hotplug.designs.catalog import DESIGNS

SMALL = ["--boot-cpus", "1", "--max-cpus", "2", "--plug", "1", "--unplug", "0"]
CAP = ["--max-states", "3000"]
EXPECTED = Path(__file__).resolve().parent / "expected" / "matrix-small.json"
ATTACK = "os-code-at-default-smbase"
CELL_LINE = re.compile(r"^\[(\d+)/(\d+)\] (\S+) × (\S+): (holds|violated|incomplete)")


# -- output into a pipe ------------------------------------------------------------------------------
def test_check_output_into_a_pipe_is_not_wrapped_and_has_a_compact_actor_column():
    out = run("check", "--design", "sdm", "--attack", ATTACK)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    # lines longer than 80 columns stay whole
    violation = re.compile(
        r"^ +\d+ (cpu\d)   attacker code runs in SMM; VIOLATION smm-code-integrity: \1 executes "
        r"os.payload at 0x38000 in SMM, written by os$"
    )
    assert any(violation.match(line) for line in lines)
    assert any(
        re.match(
            r"^  hard cases reached: plug-before-broadcast \(\d+ steps\); not reached before the violation:",
            line,
        )
        and line.endswith("unplug-during-relocation")
        for line in lines
    )
    # the actor column is as wide as cpuN/mgmt need; an adversary's name takes its own room
    head = next(i for i, line in enumerate(lines) if re.match(r"^shortest trace \(\d+ steps\):$", line))
    trace = lines[head + 2 :]  # after the folded boot
    steps = [line for line in trace if re.match(r"^ +\d+ \S", line)]
    assert len(steps) > 40
    for line in steps:
        actor, gap = re.match(r"^ +\d+ (\S+)( +)", line).groups()
        assert len(actor) + len(gap) == 7 if not actor.startswith("adv:") else gap == " ", line
    assert any(
        re.match(rf"^ +\d+ adv:{ATTACK} the OS writes its own code at 0x38000$", line) for line in lines
    )


# A run where a state invariant stays broken for many steps: without broadcast SMIs the OS runs the
# hot-added CPUs with their reset SMBASE.
NO_BROADCAST = ("simulate", "--fw-no-broadcast")
OUTSIDE_TSEG = r"cpu\d executes OS code with SMBASE 0x30000, outside TSEG"


def test_simulate_into_a_pipe_keeps_table_rows_whole():
    out = run(*NO_BROADCAST)
    rows = [line for line in out.stdout.splitlines() if line.startswith("│ smbase-in-tseg")]
    assert len(rows) == 1 and re.search(rf"step \d+: {OUTSIDE_TSEG}", rows[0])


def test_a_violation_is_reported_once_with_the_steps_in_which_it_held():
    out = run(*NO_BROADCAST)
    assert out.returncode == 1
    timeline = [line for line in out.stdout.splitlines() if re.match(r"^ +\d+ smbase-in-tseg ", line)]
    texts = [re.sub(r"^ +\d+ smbase-in-tseg (.*) \(violated in .*\)$", r"\1", line) for line in timeline]
    assert len(texts) == len(set(texts)) >= 2  # each distinct violation once
    line = next(line for line in timeline if re.search(OUTSIDE_TSEG, line))
    text = re.search(OUTSIDE_TSEG, line)[0]  # type: ignore[index]
    first, a, b = re.match(r"^ +(\d+) smbase-in-tseg .* \(violated in steps (\d+)-(\d+)\)$", line).groups()
    assert first == a and int(b) > int(a)  # shown at its first step, with the run of steps it held in
    doc = json.loads(run(*NO_BROADCAST, "--json").stdout)
    shown = [(e["actor"], e["text"]) for e in doc["timeline"] if e["kind"] == "violation"]
    assert len(shown) == len(set(shown)) == len(doc["violations"])
    entry = next(v for v in doc["violations"] if v["text"] == text)
    assert entry == {
        "property": "smbase-in-tseg",
        "text": text,
        "steps": [[int(a), int(b)]],
        "judged": True,
    }
    held = sum(b - a + 1 for v in doc["violations"] for a, b in v["steps"])
    assert held > 5 * len(doc["violations"])  # reported after every step they held in, shown once


# -- what was written ---------------------------------------------------------------------------------
def test_check_html_and_junit_say_what_they_wrote(tmp_path):
    html, xml = tmp_path / "c.html", tmp_path / "c.xml"
    out = run("check", "--design", "sdm", "--attack", ATTACK, "--html", str(html), "--junit", str(xml))
    assert out.returncode == 1
    assert f"HTML page written to {html}: the verdict table and the shortest trace as a sequence diagram" in (
        out.stdout
    )
    assert f"JUnit XML written to {xml}: 1 test case" in out.stdout
    quiet = run("check", "--design", "sdm", "--attack", ATTACK, "--json", "--junit", str(xml))
    json.loads(quiet.stdout)  # stdout stays one JSON document; the note goes to stderr
    assert f"JUnit XML written to {xml}: 1 test case" in quiet.stderr


# -- JUnit XML --------------------------------------------------------------------------------------------
def _cases(path: Path) -> dict[tuple[str, str], object]:
    xml = JUnitXml.fromfile(str(path))
    return {(case.classname, case.name): case for suite in xml for case in suite}


def _props(case) -> dict[str, str]:
    return {p.name: p.value for p in case.child(Properties)}


def test_check_junit_is_one_failing_case_with_the_readable_trace(tmp_path):
    xml = tmp_path / "c.xml"
    out = run("check", "--design", "sdm", "--attack", ATTACK, "--junit", str(xml))
    assert out.returncode == 1
    cases = _cases(xml)
    assert list(cases) == [("sdm", ATTACK)]
    case = cases[("sdm", ATTACK)]
    [failure] = case.result
    assert isinstance(failure, Failure) and failure.message == "smm-code-integrity"
    assert re.search(r"shortest trace \(\d+ steps\):", failure.text)
    assert re.search(rf"(?m)^ +\d+ adv:{ATTACK} the OS writes its own code at 0x38000$", failure.text)
    props = _props(case)
    assert {"states", "transitions", "seconds"} <= set(props)
    assert int(props["states"]) > 0 and int(props["transitions"]) >= int(props["states"]) - 1
    suite = ET.parse(xml).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("1", "1", "0")


def test_matrix_junit_has_a_case_per_cell_failures_and_errors(tmp_path):
    xml = tmp_path / "m.xml"
    designs = ["sdm", "smram-default-smbase"]
    columns = ["none", ATTACK, "all"]
    args = [a for d in designs for a in ("--design", d)] + [a for c in columns for a in ("--attack", c)]
    # sdm × all needs ~12,300 states (os-ipi is among `all`); the shipped design's is far larger
    out = run("matrix", *SMALL, "--max-states", "20000", *args, "--junit", str(xml), "--workers", "2")
    assert out.returncode == 0, out.stderr
    cases = _cases(xml)
    assert set(cases) == {(d, c) for d in designs for c in columns}
    outcome = {key: type(case.result[0]).__name__ if case.result else "passed" for key, case in cases.items()}
    assert outcome == {
        ("sdm", "none"): "passed",
        ("sdm", ATTACK): "Failure",
        ("sdm", "all"): "Failure",
        ("smram-default-smbase", "none"): "passed",
        ("smram-default-smbase", ATTACK): "passed",
        ("smram-default-smbase", "all"): "Error",  # beyond 20,000 states: incomplete
    }
    error = cases[("smram-default-smbase", "all")].result[0]
    assert isinstance(error, Error) and error.message.startswith(
        "stopped after 20,000 states: no schedule of up to"
    )
    assert "shortest trace" in cases[("sdm", "all")].result[0].text  # matrix cells get their trace too
    assert _props(cases[("smram-default-smbase", "all")])["bound"].isdigit()
    assert f"JUnit XML written to {xml}: 6 test cases" in out.stdout


def test_bad_input_is_an_error_case_in_the_junit_file(tmp_path):
    xml = tmp_path / "bad.xml"
    for args in (
        ["check", "--design", "nope"],
        ["matrix", "--attack", "nope"],
        ["check", "--max-states", "0"],
    ):
        out = run(*args, "--junit", str(xml))
        assert out.returncode == 2 and out.stderr.count("\n") == 1
        [(key, case)] = _cases(xml).items()
        [error] = case.result
        assert key == ("smm-hotplug", args[0]) and isinstance(error, Error) and error.type == "bad-input"
        assert error.message in out.stderr


# -- matrix rows, columns and expectations ------------------------------------------------------------------
def test_matrix_design_and_attack_choose_rows_and_columns():
    out = run(
        "matrix", *SMALL, *CAP, "--design", "dma-guard", "--attack", "none", "--attack", ATTACK, "--json"
    )
    assert out.returncode == 0, out.stderr
    cells = json.loads(out.stdout)
    assert [(c["design"], c["attacks"], c["verdict"]) for c in cells] == [
        ("dma-guard", [], "holds"),
        ("dma-guard", [ATTACK], "violated"),
    ]
    bad = run("matrix", "--design", "nope")
    assert bad.returncode == 2 and "unknown design 'nope'" in bad.stderr


def test_matrix_and_report_log_a_line_per_finished_cell_when_stderr_is_not_a_terminal(tmp_path):
    out = run("matrix", *SMALL, *CAP, "--design", "sdm", "--design", "dma-guard", "--workers", "2")
    lines = [CELL_LINE.match(line) for line in out.stderr.splitlines()]
    assert all(lines) and len(lines) == 2 * (len(ADVERSARIES) + 2)
    assert sorted(int(m.group(1)) for m in lines) == list(range(1, len(lines) + 1))
    assert {m.group(2) for m in lines} == {str(len(lines))}
    rep = run(
        "report",
        *SMALL,
        *CAP,
        "--design",
        "sdm",
        "--attack",
        ATTACK,
        "--no-history",
        "-o",
        str(tmp_path / "r.html"),
    )
    assert rep.returncode == 0
    [line] = rep.stderr.splitlines()
    assert line.startswith(f"[1/1] sdm × {ATTACK}: violated smm-code-integrity (") and "states" in line
    assert (
        f"report written to {tmp_path / 'r.html'}: 1 check, 2 diagrams (1 shortest trace of attacks and "
        "findings, 1 benign run" in rep.stdout
    )


def test_matrix_expect_passes_on_the_committed_expectation_and_lists_each_changed_cell(tmp_path):
    same = run("matrix", *SMALL, *CAP, "--expect", str(EXPECTED))
    assert same.returncode == 0, same.stdout[-2000:]
    n = len(DESIGNS) * (len(ADVERSARIES) + 2)
    assert f"all {n} cells match {EXPECTED}" in same.stdout

    cells = json.loads(EXPECTED.read_text())
    edited = [dict(c) for c in cells]
    i = next(k for k, c in enumerate(edited) if (c["design"], c["attacks"]) == ("sdm", [ATTACK]))
    edited[i].update(verdict="holds", property=None)
    j = next(k for k, c in enumerate(edited) if (c["design"], c["attacks"]) == ("dma-guard", []))
    edited[j].update(verdict="violated", property="smram-isolation")
    gone = edited.pop(
        next(k for k, c in enumerate(edited) if (c["design"], c["attacks"]) == ("sdm", ["all"]))
    )
    edited.append(dict(gone, design="retired-design"))
    path = tmp_path / "expect.json"
    path.write_text(json.dumps(edited))
    out = run("matrix", *SMALL, *CAP, "--expect", str(path))
    assert out.returncode == 1
    tail = out.stdout[out.stdout.index(f"4 of {n} cells differ from {path}:") :].splitlines()
    assert tail[1:] == [
        f"  sdm × {ATTACK}: expected holds, now violated smm-code-integrity",
        f"  sdm × all: not in {path}, now incomplete",
        "  dma-guard × none: expected violated smram-isolation, now holds",
        "  retired-design × all: expected incomplete, but the matrix has no such cell any more",
    ]
    # a restricted matrix compares its cells and says how many it left out
    part = run(
        "matrix", *SMALL, *CAP, "--expect", str(path), "--design", "dma-guard", "--attack", "none", "--json"
    )
    assert part.returncode == 1 and json.loads(part.stdout)
    assert (
        f"{len(edited) - 1} cells of {path} lie outside --design/--attack and were not compared"
        in part.stderr
    )
    assert "  dma-guard × none: expected violated smram-isolation, now holds" in part.stderr


@pytest.mark.parametrize(
    "content,needle",
    [
        (lambda cells: cells[:1] + cells[:1], "[1]: sdm × none is listed twice"),
        (
            lambda cells: [dict(cells[0], verdict="fine")],
            "[0].verdict: should be 'holds', 'violated' or 'incomplete'",
        ),
        (lambda cells: [dict(cells[0], attacks="none")], "[0].attacks: should be a JSON array"),
        (lambda cells: [], "the document: an expectation lists at least one cell"),
        (lambda cells: {"cells": cells}, "the document: should be a JSON array"),
    ],
)
def test_a_bad_expectation_file_is_one_line_and_exit_2(tmp_path, content, needle):
    path = tmp_path / "e.json"
    path.write_text(json.dumps(content(json.loads(EXPECTED.read_text()))))
    out = run("matrix", *SMALL, *CAP, "--expect", str(path))
    assert out.returncode == 2 and not out.stdout and out.stderr.count("\n") == 1, out.stderr
    assert needle in out.stderr


def test_an_expectation_for_another_configuration_is_refused_before_any_checking():
    out = run("matrix", "--expect", str(EXPECTED))
    assert out.returncode == 2 and not out.stdout and out.stderr.count("\n") == 1
    assert (
        "[0].scenario: the expectation is for --boot-cpus 1 --max-cpus 2 --plug 1 --unplug 0, this matrix"
        in (out.stderr)
    )


# -- Ctrl-C ----------------------------------------------------------------------------------------------
def _interrupt_after_first_cell(*args: str) -> tuple[subprocess.Popen, str, str, str]:
    """Run `smm-hotplug ARGS` in its own process group, press Ctrl-C (SIGINT to the whole group,
    as a terminal does) once the first cell is reported; (process, first line, stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smm_hotplug.interfaces.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    first = proc.stderr.readline()
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)  # it used to run on for minutes
    return proc, first, stdout, stderr


def _group_gone(pgid: int) -> bool:
    """No process of the group is left (workers included); give the kernel a moment to reap."""
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_the_matrix_and_every_worker_and_reports_the_finished_cells(tmp_path):
    xml = tmp_path / "m.xml"
    proc, first, stdout, stderr = _interrupt_after_first_cell("matrix", "--workers", "2", "--junit", str(xml))
    assert CELL_LINE.match(first), first
    assert proc.returncode == 2
    assert _group_gone(proc.pid)
    total = len(DESIGNS) * (len(ADVERSARIES) + 2)
    done = re.search(rf"smm-hotplug: interrupted \(Ctrl-C\): (\d+) of {total} cells finished", stderr)
    assert done and 1 <= int(done.group(1)) < total, stderr
    finished = int(done.group(1))
    assert f"{finished} checks, " in stdout  # the matrix of the finished cells
    assert "Traceback" not in stderr
    cases = _cases(xml)
    assert len(cases) == total
    interrupted = [c for c in cases.values() if c.result and c.result[0].type == "interrupted"]
    assert len(interrupted) == total - finished


def test_ctrl_c_stops_the_report_and_writes_the_finished_cells(tmp_path):
    page = tmp_path / "r.html"
    proc, first, stdout, stderr = _interrupt_after_first_cell("report", "-o", str(page), "--workers", "2")
    assert CELL_LINE.match(first), first
    assert proc.returncode == 2
    assert _group_gone(proc.pid)
    assert re.search(r"interrupted \(Ctrl-C\): \d+ of \d+ cells finished", stderr)
    assert f"report written to {page}" in stdout
    assert "Incomplete page: interrupted (Ctrl-C)" in page.read_text()
