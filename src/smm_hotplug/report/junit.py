"""JUnit XML for CI systems (``--junit FILE`` of check, matrix and report), written with junitparser.

One test case per design × adversary cell: class name the design, name the column (an adversary,
``all``, ``none``, or a check's adversaries joined by ``+``).  A violated cell is a failure
(message: the property; body: the readable trace as ``check`` prints it), an incomplete cell an
error (message: why it stopped and how far it proved), a cell Ctrl-C kept from finishing an
error, and bad input one error case named after the command.  States, transitions, depth and
seconds are properties of each case; the tool version, model digest and configuration of the
suite.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Properties, Property, TestCase, TestSuite
from rich.console import Console

from smm_hotplug.checker.explore import CheckResult
from smm_hotplug.checker.model_id import model_digest, tool_version
from smm_hotplug.world import Scenario

CLASS_BAD_INPUT = "smm-hotplug"


def readable(res: CheckResult) -> str:
    """What ``check`` prints for ``res``, as plain text."""
    from smm_hotplug.report.checks import render_check

    buf = io.StringIO()
    render_check(res, Console(file=buf, width=10_000, soft_wrap=True, color_system=None, highlight=False))
    return buf.getvalue()


def _properties(pairs: list[tuple[str, str]]) -> Properties:
    props = Properties()
    for name, value in pairs:
        props.add_property(Property(name, value))
    return props


def case_of(res: CheckResult) -> TestCase:
    case = TestCase(res.column, res.design, round(res.seconds, 3))
    figures = [
        ("states", str(res.states)),
        ("transitions", str(res.transitions)),
        ("depth", str(res.depth)),
        ("seconds", f"{res.seconds:.3f}"),
        ("judged", ",".join(res.judged)),
    ]
    if res.bound is not None:
        figures.append(("bound", str(res.bound)))
    case.append(_properties(figures))
    if res.verdict == "violated":
        failure = Failure(res.prop, "violated")
        failure.text = readable(res)
        case.result = [failure]
    elif res.verdict == "incomplete":
        error = Error(res.detail, "incomplete")
        error.text = readable(res)
        case.result = [error]
    return case


def _suite(command: str, scenario: Scenario | None) -> TestSuite:
    suite = TestSuite(f"smm-hotplug {command}")
    suite.add_property("tool_version", tool_version())
    suite.add_property("model_digest", model_digest())
    if scenario is not None:
        for name in ("boot_cpus", "max_cpus", "plug", "unplug"):
            suite.add_property(name, str(getattr(scenario, name)))
    return suite


def _write(path: Path, suite: TestSuite) -> None:
    suite.update_statistics()
    xml = JUnitXml()
    xml.add_testsuite(suite)
    xml.write(str(path), pretty=True)


def write_results(
    path: Path,
    command: str,
    scenario: Scenario,
    results: list[CheckResult],
    unfinished: Sequence[tuple[str, str]] = (),
) -> int:
    """One case per cell, then an error case per cell Ctrl-C kept from finishing; the number of
    cases written."""
    suite = _suite(command, scenario)
    for res in results:
        suite.add_testcase(case_of(res))
    for design, column in unfinished:
        case = TestCase(column, design, 0.0)
        case.result = [Error("not checked: interrupted (Ctrl-C) before this cell finished", "interrupted")]
        suite.add_testcase(case)
    _write(path, suite)
    return len(results) + len(unfinished)


def write_bad_input(path: Path, command: str, message: str) -> None:
    """The command refused its input: one error case, so a CI job sees why nothing was checked."""
    suite = _suite(command, None)
    case = TestCase(command, CLASS_BAD_INPUT, 0.0)
    case.result = [Error(message, "bad-input")]
    suite.add_testcase(case)
    _write(path, suite)
