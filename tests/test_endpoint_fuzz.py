"""Bad command lines, malformed qtest lines and malformed QMP JSON never kill the endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smm_hotplug.hw.config import platform_config
from smm_hotplug.interfaces.qemu import qjson
from smm_hotplug.interfaces.qemu.cmdline import CmdlineError, parse
from smm_hotplug.interfaces.qemu.qmp import DeviceTable, QmpSession
from smm_hotplug.interfaces.qemu.qtest import QtestSession
from smm_hotplug.interfaces.qemu.session import QemuMachine

COMMANDS = [
    "outb",
    "outw",
    "outl",
    "inb",
    "inw",
    "inl",
    "readb",
    "readw",
    "readl",
    "readq",
    "writeb",
    "writew",
    "writel",
    "writeq",
    "read",
    "write",
    "b64read",
    "b64write",
    "memset",
    "endianness",
    "clock_step",
    "irq_intercept_in",
    "irq_intercept_out",
    "set_irq_in",
    "frob",
    "",
]
WORDS = st.one_of(
    st.sampled_from(
        [
            "0x0",
            "0xcd8",
            "0xb2",
            "0x38000",
            "-1",
            "010",
            "+5",
            "zz",
            "",
            "0x",
            "0xffffffffffffffffff",
            "ioapic",
            "unnamed-gpio-in",
            "9",
            "AQID",
            "!!!",
            "0xdeadbeef",
            "4",
            "0\r",
        ]
    ),
    st.text(max_size=8),
)
LINES = st.builds(lambda c, ws: " ".join([c, *ws]), st.sampled_from(COMMANDS), st.lists(WORDS, max_size=5))


def _machine() -> QemuMachine:
    return QemuMachine(platform_config(1, 4), firmware=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(LINES, st.text(max_size=30)), max_size=20))
def test_any_qtest_line_gets_an_answer(lines):
    session = QtestSession(_machine())
    for line in lines:
        if "\n" in line:
            continue
        answers = session.handle(line)
        assert answers and answers[-1].split(" ")[0] in ("OK", "FAIL", "ERR")


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)
COMMAND_OBJECTS = st.fixed_dictionaries(
    {
        "execute": st.sampled_from(
            [
                "qmp_capabilities",
                "device_add",
                "device_del",
                "query-status",
                "query-hotpluggable-cpus",
                "query-cpus-fast",
                "frob",
                "system_reset",
            ]
        )
    },
    optional={
        "arguments": st.dictionaries(
            st.sampled_from(["driver", "id", "core-id", "socket-id", "thread-id", "enable", "x"]),
            JSONISH,
            max_size=4,
        ),
        "id": JSONISH,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chunks=st.lists(
        st.one_of(st.text(max_size=20), COMMAND_OBJECTS.map(lambda o: qjson.dumps(o) + "\n")), max_size=12
    )
)
def test_any_qmp_input_gets_json_answers(chunks):
    qm = _machine()
    session = QmpSession(qm, DeviceTable(qm))
    stream = qjson.Streamer()
    for chunk in chunks:
        for item in stream.feed(chunk):
            reply = {"error": str(item)} if isinstance(item, qjson.JsonError) else session.handle(item)
            assert isinstance(reply, dict) and ("return" in reply or "error" in reply)
            qjson.dumps(reply)


@settings(max_examples=300, deadline=None)
@given(
    argv=st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "-machine",
                    "q35,smm=on",
                    "-smp",
                    "2,maxcpus=4",
                    "-m",
                    "256",
                    "-qtest",
                    "stdio",
                    "-qmp",
                    "unix:/tmp/x,server=on",
                    "-accel",
                    "qtest",
                    "-global",
                    "mch.extended-tseg-mbytes=8",
                    "-display",
                    "none",
                    "-nodefaults",
                    "-foo",
                    "bogus:x",
                    "0",
                    "abc",
                ]
            ),
            st.text(max_size=12),
        ),
        max_size=10,
    )
)
def test_any_command_line_parses_or_fails_with_a_message(argv):
    try:
        parse(argv)
    except CmdlineError as err:
        assert err.line() and "\n" not in err.line()


def test_the_running_endpoint_survives_garbage_on_both_channels():
    tmp = tempfile.mkdtemp()
    sock_path = os.path.join(tmp, "qmp.sock")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smm_hotplug.interfaces.qemu.server",
            "-machine",
            "q35",
            "-smp",
            "1,maxcpus=4",
            "-qtest",
            "stdio",
            "-display",
            "none",
            "-qmp",
            f"unix:{sock_path},server=on,wait=off",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        while not os.path.exists(sock_path):
            time.sleep(0.02)
        garbage = [
            "",
            "outb",
            "outb zz 1",
            "readl",
            "read 0x1000 0",
            "write 0x1000 4",
            "memset 0x1000",
            "inb 0x10000",
            "\x00\x01",
            "irq_intercept_in",
            "b64write 0x1000",
        ]
        for line in garbage:
            proc.stdin.write((line + "\n").encode())
        proc.stdin.write(b"endianness\n")
        proc.stdin.flush()
        answers = [proc.stdout.readline().decode().strip() for _ in range(len(garbage) + 1)]
        assert all(a.startswith("FAIL") for a in answers[:-1]), answers
        assert answers[-1] == "OK little"
        qmp = socket.socket(socket.AF_UNIX)
        qmp.connect(sock_path)
        f = qmp.makefile("rwb", buffering=0)
        assert f.readline().startswith(b'{"QMP"')
        for bad in (
            b"{{{\n",
            b"]]]}}}\n",
            b"\xff\xfe\n",
            b"\xc3\xa9\n",
            b"-x\n",
            b'{"execute":"qmp_capabilities"}\n',
            b"nul\x00\n",
            b'{"execute":"device_add","arguments":{"driver":null}}\n',
            b'{"execute":"query-status","id":"probe"}\n',
        ):
            f.write(bad)
        lines: list[bytes] = []
        while not lines or b'"probe"' not in lines[-1]:
            lines.append(f.readline())
            assert lines[-1], lines
        assert lines[-1].startswith(b'{"return": {"status": "running"'), lines
        assert all(line.endswith(b"\r\n") for line in lines)
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_bad_command_lines_exit_1_with_one_line():
    for argv in (["-foo"], ["-smp", "abc"], ["-machine", "q35,smm=maybe"], ["-m", "abc"], ["-qtest"]):
        out = subprocess.run(
            [sys.executable, "-m", "smm_hotplug.interfaces.qemu.server", *argv],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
