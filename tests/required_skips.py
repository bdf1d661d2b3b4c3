"""Tests CI requires may not be skipped there.

A test marked ``@pytest.mark.requires("qemu")``, ``("browser")`` or ``("qemu-qtests")`` may skip
on a developer's machine that lacks QEMU, Chromium or QEMU's built qtest programs; where
``.ci/run`` sets SMM_HOTPLUG_REQUIRE_QEMU=1, SMM_HOTPLUG_REQUIRE_BROWSER=1 or
SMM_HOTPLUG_REQUIRE_QEMU_QTESTS=1, any skip of such a test — whatever raised it: an explicit
``pytest.skip``, ``importorskip``, a fixture — is reported as a failure instead.
"""

from __future__ import annotations

import os

import pytest

REQUIRED = {
    "qemu": "SMM_HOTPLUG_REQUIRE_QEMU",
    "browser": "SMM_HOTPLUG_REQUIRE_BROWSER",
    "qemu-qtests": "SMM_HOTPLUG_REQUIRE_QEMU_QTESTS",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires(what): the test needs 'qemu', 'browser' or 'qemu-qtests'; where .ci/run requires it, "
        "a skip fails",
    )


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped:
        return
    for mark in item.iter_markers("requires"):
        what = mark.args[0] if mark.args else ""
        if what not in REQUIRED:
            raise pytest.UsageError(f"{item.nodeid}: requires({what!r}): known: {', '.join(REQUIRED)}")
        env = REQUIRED[what]
        if os.environ.get(env) == "1":
            report.outcome = "failed"
            report.longrepr = f"skipped although {env}=1 requires it: {_skip_reason(report)}"
            return
