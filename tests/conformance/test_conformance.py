"""smm-hotplug-qemu answers every scripted session exactly as QEMU 7.2 does."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.sessions import SESSIONS, run
from conformance.targets import qemu_available

TRANSCRIPTS = Path(__file__).resolve().parent / "transcripts"


def _diff(ours: list, theirs: list) -> str:
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if json.dumps(a) != json.dumps(b):
            return f"entry {i}:\n  smm-hotplug-qemu: {a}\n  QEMU:             {b}"
    return f"lengths differ: {len(ours)} vs {len(theirs)}"


@pytest.mark.parametrize("name", list(SESSIONS))
def test_matches_recorded_qemu_transcript(name):
    path = TRANSCRIPTS / f"{name}.json"
    assert path.exists(), f"no recorded transcript for {name}; run tests/conformance/record.py"
    recorded = json.loads(path.read_text())
    ours = json.loads(json.dumps(run(name, "ours")))
    assert json.dumps(ours) == json.dumps(recorded), _diff(ours, recorded)  # key order counts


@pytest.mark.requires("qemu")  # a skip fails where SMM_HOTPLUG_REQUIRE_QEMU=1 (.ci/run)
@pytest.mark.parametrize("name", list(SESSIONS))
def test_matches_live_qemu(name):
    if not qemu_available():
        pytest.skip("qemu-system-x86_64 not installed; the recorded transcripts were compared instead")
    theirs = json.loads(json.dumps(run(name, "qemu")))
    ours = json.loads(json.dumps(run(name, "ours")))
    assert json.dumps(ours) == json.dumps(theirs), _diff(ours, theirs)


def _query_machines(command: list[str]) -> list[str]:
    """query-machines over QMP on standard input/output, each machine's entry as QEMU's bytes."""
    out = subprocess.run(
        [*command, "-machine", "none", "-display", "none", "-nodefaults", "-qmp", "stdio"],
        input=b'{"execute":"qmp_capabilities"}\n{"execute":"query-machines"}\n{"execute":"quit"}\n',
        capture_output=True,
        timeout=60,
    ).stdout.decode()
    reply = next(line for line in out.split("\r\n") if line.startswith('{"return": [{'))
    return re.findall(r"\{[^{}]*\}", reply)


@pytest.mark.requires("qemu")  # a skip fails where SMM_HOTPLUG_REQUIRE_QEMU=1 (.ci/run)
def test_query_machines_lists_qemus_q35_types_and_none_exactly_as_qemu():
    if not qemu_available():
        pytest.skip("qemu-system-x86_64 not installed")
    ours = _query_machines([sys.executable, "-m", "smm_hotplug.interfaces.qemu.server"])
    theirs = _query_machines(["qemu-system-x86_64"])
    names = {json.loads(entry)["name"] for entry in ours}
    assert names == {json.loads(e)["name"] for e in theirs if "q35" in e or '"none"' in e}
    assert ours == [entry for entry in theirs if json.loads(entry)["name"] in names]
