from __future__ import annotations

import shlex
import sys

import pytest

from qemu_harness.qtest import QTestState

# The harness does not change between targets: only QTEST_QEMU_BINARY (here: `binary`) does.
ENDPOINT = f"{shlex.quote(sys.executable)} -m smm_hotplug.interfaces.qemu.server"


@pytest.fixture
def qtest_init():
    started: list[QTestState] = []

    def init(args: str) -> QTestState:
        qts = QTestState(args, binary=ENDPOINT)
        started.append(qts)
        return qts

    yield init
    for qts in started:
        qts.quit()
