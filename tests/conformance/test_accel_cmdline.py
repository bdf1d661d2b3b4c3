"""smm-hotplug-qemu accepts and refuses the accelerator options exactly as QEMU 7.2 does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conformance.accel_cmdline import CASES, ENDPOINT_ONLY, observe
from conformance.targets import qemu_available

RECORDED = Path(__file__).resolve().parent / "transcripts" / "accel_cmdline.json"
REQUIRE_QEMU = os.environ.get("SMM_HOTPLUG_REQUIRE_QEMU") == "1"


@pytest.mark.parametrize("name", list(CASES))
def test_matches_recorded_qemu(name):
    recorded = json.loads(RECORDED.read_text())
    assert name in recorded, "no recorded answer; run tests/conformance/record.py accel_cmdline"
    assert observe("ours", CASES[name]) == recorded[name]


@pytest.mark.parametrize("name", list(CASES))
def test_matches_live_qemu(name):
    if not qemu_available():
        if REQUIRE_QEMU:
            pytest.fail("qemu-system-x86_64 is required (SMM_HOTPLUG_REQUIRE_QEMU=1) but not installed")
        pytest.skip("qemu-system-x86_64 not installed; the recorded answers were compared instead")
    assert observe("ours", CASES[name]) == observe("qemu", CASES[name])


@pytest.mark.parametrize("name", list(ENDPOINT_ONLY))
def test_host_dependent_cases_on_the_endpoint(name):
    args, expected = ENDPOINT_ONLY[name]
    got = observe("ours", args)
    if expected == "up":
        assert got == {"up": "OK", "stderr": []}
    else:
        assert got["exit"] == 1 and len(got["stderr"]) == 1
