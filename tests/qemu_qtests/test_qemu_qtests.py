"""QEMU 7.2's tests/qtest/q35-test and cpu-plug-test, unchanged, against smm-hotplug-qemu.

The programs are built from Debian's source package by ``.ci/build-qemu-qtests`` (which caches
them); ``SMM_HOTPLUG_QTESTS_DIR`` names their directory (default: that cache).  libqtest finds
the machine through ``QTEST_QEMU_BINARY``, whose name must end in ``-system-x86_64``: a symlink
of that name to the endpoint's console script.  Each test case of a program is run on its own
(``-p PATH``) and must print ``ok``.  Without the programs the tests are skipped, unless
``SMM_HOTPLUG_REQUIRE_QEMU_QTESTS=1`` (set by .ci/run) makes that a failure (tests/required_skips.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smm_hotplug.interfaces.qemu.machines import MACHINES, Q35_LATEST

PROGRAMS_DIR = Path(
    os.environ.get("SMM_HOTPLUG_QTESTS_DIR", Path.home() / ".cache" / "smm-hotplug" / "qemu-7.2-qtests")
)
# Every test here needs the built programs: a skip fails where .ci/run requires them.
pytestmark = pytest.mark.requires("qemu-qtests")
ENDPOINT = shutil.which("smm-hotplug-qemu", path=str(Path(sys.executable).parent)) or shutil.which(
    "smm-hotplug-qemu"
)


def _program(name: str) -> Path:
    path = PROGRAMS_DIR / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (run .ci/build-qemu-qtests)")
    return path


@pytest.fixture(scope="session")
def qemu_binary(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A symlink named like a QEMU binary, as libqtest requires, to the endpoint."""
    assert ENDPOINT is not None, "the smm-hotplug-qemu console script is not installed"
    link = tmp_path_factory.mktemp("bin") / "smm-hotplug-system-x86_64"
    link.symlink_to(ENDPOINT)
    return str(link)


def _run(program: Path, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QTEST_QEMU_BINARY": binary}
    return subprocess.run(
        [str(program), "--tap", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _results(out: str) -> dict[str, bool]:
    return {m[2]: m[1] == "ok" for m in re.finditer(r"^(ok|not ok) \d+ (\S+)", out, re.MULTILINE)}


Q35_CASES = [
    "/x86_64/q35/smram/lock",
    "/x86_64/q35/tseg-size/1mb",
    "/x86_64/q35/tseg-size/2mb",
    "/x86_64/q35/tseg-size/8mb",
    "/x86_64/q35/tseg-size/ext/16mb",
    "/x86_64/q35/smram/smbase_lock",
    "/x86_64/q35/smram/legacy_smbase",
]


def test_q35_test_lists_the_cases_run_here(qemu_binary):
    """The cases below are all of q35-test's, as the program itself lists them."""
    out = subprocess.run(
        [str(_program("q35-test")), "-l"],
        env={**os.environ, "QTEST_QEMU_BINARY": qemu_binary},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert sorted(line for line in out.split() if line.startswith("/")) == sorted(Q35_CASES)


@pytest.mark.parametrize("case", Q35_CASES)
def test_q35_test_case(qemu_binary, case):
    run = _run(_program("q35-test"), qemu_binary, "-p", case)
    assert _results(run.stdout) == {case: True}, run.stdout + run.stderr


@pytest.mark.parametrize("mode", ["quick", "slow"])
def test_cpu_plug_test_on_every_q35_machine_type(qemu_binary, mode):
    """Quick mode plugs CPUs into the latest q35 machine type, slow mode into every one the
    endpoint lists in query-machines (all of QEMU 7.2's q35 types)."""
    run = _run(_program("cpu-plug-test"), qemu_binary, "-m", mode)
    results = _results(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert results and all(results.values()), run.stdout
    machines = {re.match(r"/x86_64/cpu-plug/([^/]+)/", path)[1] for path in results}  # type: ignore[index]
    expected = {Q35_LATEST} if mode == "quick" else {n for n in MACHINES if n.startswith("pc-q35-")}
    assert machines == expected
