"""A skip of a test CI requires fails CI; every skip shows its reason in `make test` output."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

import pytest

pytest_plugins = ("pytester",)

ADDOPTS = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["tool"][
    "pytest"
]["ini_options"]["addopts"]

SUITE = """
import pytest

@pytest.fixture
def browser():
    pytest.skip("chromium is not installed")

@pytest.mark.requires("browser")
def test_in_browser(browser):
    pass

@pytest.mark.requires("qemu")
def test_live_qemu():
    pytest.importorskip("no_such_module_for_qemu")

def test_optional():
    pytest.skip("nice to have")
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for env in ("SMM_HOTPLUG_REQUIRE_QEMU", "SMM_HOTPLUG_REQUIRE_BROWSER"):
        monkeypatch.delenv(env, raising=False)
    pytester.makeconftest("from required_skips import pytest_configure, pytest_runtest_makereport\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_without_the_requirement_a_missing_tool_is_a_skip_whose_reason_is_shown(suite):
    result = suite.runpytest(*shlex.split(ADDOPTS))
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(
        [
            "SKIPPED [[]1[]] *chromium is not installed",
            "SKIPPED [[]1[]] *could not import 'no_such_module_for_qemu'*",
            "SKIPPED [[]1[]] *nice to have",
        ],
        consecutive=False,
    )


@pytest.mark.parametrize(
    "env,failing,reason,outcome",
    [
        # a skip in a fixture fails the test's setup: pytest counts it as an error
        ("SMM_HOTPLUG_REQUIRE_BROWSER", "test_in_browser", "chromium is not installed", {"errors": 1}),
        ("SMM_HOTPLUG_REQUIRE_QEMU", "test_live_qemu", "could not import", {"failed": 1}),
    ],
)
def test_where_ci_requires_it_a_skip_fails(suite, monkeypatch, env, failing, reason, outcome):
    monkeypatch.setenv(env, "1")
    result = suite.runpytest(*shlex.split(ADDOPTS))
    assert result.ret != 0
    result.assert_outcomes(skipped=2, **outcome)
    result.stdout.fnmatch_lines([f"*_ *{failing} _*"], consecutive=False)
    assert f"skipped although {env}=1 requires it: {reason}" in result.stdout.str()


def test_ci_requires_live_qemu_and_the_browser():
    """.ci/run sets both requirements, and the tests it names carry the marker."""
    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    assert "export SMM_HOTPLUG_REQUIRE_QEMU=1" in ci and "export SMM_HOTPLUG_REQUIRE_BROWSER=1" in ci
    assert '@pytest.mark.requires("qemu")' in (root / "tests/conformance/test_conformance.py").read_text()
    assert '@pytest.mark.requires("browser")' in (root / "tests/test_report.py").read_text()
