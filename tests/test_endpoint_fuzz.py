"""Bad command lines, malformed qtest lines and malformed QMP JSON never kill the endpoint."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smm_hotplug.hw.config import platform_config
from smm_hotplug.interfaces.qemu import jsonparse, qjson
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
    stream = jsonparse.Streamer()
    for chunk in chunks:
        for item in stream.feed(chunk):
            reply = {"error": str(item)} if isinstance(item, jsonparse.JsonError) else session.handle(item)
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


# -- the edges: deep nesting, huge numbers, huge lines --------------------------------------------
NESTED = st.builds(
    lambda depth, opener, tail: opener * depth + tail,
    st.integers(0, 3000),
    st.sampled_from([b"[", b"{", b'{"a":', b"[1,"]),
    st.sampled_from([b"", b"]" * 3000, b"}" * 3000, b"1", b'"x"', b"\n"]),
)
NUMBERS = st.builds(
    lambda sign, digits, frac, exp: sign + digits + frac + exp,
    st.sampled_from([b"", b"-"]),
    st.integers(1, 20000).map(lambda n: b"9" * n),
    st.sampled_from([b"", b".5", b"." + b"1" * 5000]),
    st.sampled_from([b"", b"e400", b"e-400", b"E+99999"]),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    parts=st.lists(
        st.one_of(
            NESTED,
            NUMBERS.map(lambda n: b'{"execute":"query-status","id":' + n + b"}\n"),
            st.binary(max_size=64),
        ),
        max_size=6,
    ),
    chunk=st.integers(1, 70000),
)
def test_any_json_bytes_in_any_chunking_give_values_or_qemus_errors(parts, chunk):
    qm = _machine()
    session = QmpSession(qm, DeviceTable(qm))
    stream = jsonparse.Streamer()
    data = b"".join(parts)
    for i in range(0, len(data), chunk):
        for item in stream.feed(data[i : i + chunk]):
            if isinstance(item, jsonparse.JsonError):
                assert str(item).startswith("JSON ")
                continue
            reply = session.handle(item)
            assert qjson.dumps(reply).startswith("{")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(
    command=st.sampled_from(
        ["write 0x1000 ", "b64write 0x1000 ", "frob ", "read 0 ", "memset 0 ", "outb 0x80 "]
    ),
    size=st.integers(0, 1 << 20),
    filler=st.sampled_from(["a", "0", "f", "=", " ", "\xff"]),
)
def test_huge_qtest_lines_get_an_answer(command, size, filler):
    session = QtestSession(_machine())
    answer = session.handle(command + str(size) + " " + filler * size)[-1]
    assert answer.split(" ")[0] in ("OK", "FAIL", "ERR")


# -- command lines actually started -----------------------------------------------------------------
def _started(argv: list[str], listen: str | None) -> tuple[int | None, str]:
    """Start the endpoint; give it 10 s to exit or open what it was asked to; return (exit
    status or None if it runs, stderr).  A running endpoint is ended with SIGTERM."""
    listener = None
    if listen is not None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(listen)
        listener.listen(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "smm_hotplug.interfaces.qemu.server", *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        try:
            status = proc.wait(timeout=3)
            return status, proc.stderr.read()
        except subprocess.TimeoutExpired:
            pass
        for arg in argv:  # every QMP server socket answers with the greeting
            if arg.startswith("unix:") and "server=on" in arg:
                qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                qmp.settimeout(10)
                qmp.connect(arg[5:].split(",")[0])
                assert qmp.recv(4096).startswith(b'{"QMP"')
                qmp.close()
        if listener is not None:  # the qtest client connected to us
            listener.settimeout(10)
            client, _ = listener.accept()
            client.sendall(b"endianness\n")
            assert client.recv(100) == b"OK little\n"
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        return None, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if listener is not None:
            listener.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    picks=st.lists(
        st.sampled_from(
            [
                ["-machine", "q35"],
                ["-M", "pc-q35-4.1"],
                ["-machine", "none"],
                ["-machine", "pc"],
                ["-cpu", "Haswell"],
                ["-cpu", "nonesuch"],
                ["-smp", "2,maxcpus=4"],
                ["-smp", "1,sockets=2,cores=3,threads=2,maxcpus=12"],
                ["-m", "64"],
                ["-accel", "qtest"],
                ["-qtest-log", "/dev/null"],
                ["-qtest", "QTEST"],
                ["-qmp", "QMP,server=on,wait=off"],
                ["-qmp", "tcp:localhost:70000,server=on,wait=off"],
                ["-qmp", "tcp:localhost:-5,server=on,wait=off"],
                ["-chardev", "socket,path=QMP2,id=c0,server=on,wait=off"],
                ["-mon", "chardev=c0,mode=control"],
                ["-mon", "chardev=nonesuch,mode=control"],
                ["-display", "none"],
                ["-version"],
                ["-frob"],
            ]
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_command_line_started_runs_or_exits_with_one_line(picks):
    tmp = tempfile.mkdtemp()
    qtest = os.path.join(tmp, "qtest.sock")
    names = {"QTEST": f"unix:{qtest}", "QMP": f"unix:{tmp}/qmp.sock", "QMP2": f"{tmp}/qmp2.sock"}
    argv = [
        names.get(w.split(",")[0], w.split(",")[0]) + (w[len(w.split(",")[0]) :]) for p in picks for w in p
    ]
    argv = [a.replace("path=QMP2", f"path={names['QMP2']}") for a in argv]
    if "-chardev" not in argv and any("chardev=c0" in a for a in argv):
        argv = [a.replace("chardev=c0", "chardev=nonesuch") for a in argv]
    # a tcp port others may hold is not ours to try; 70000 wraps to 4464 (glibc), as for QEMU
    if any("tcp:localhost:70000" in a for a in argv):
        argv = [a.replace(":70000", ":0") for a in argv]
    status, err = _started(argv, qtest if "-qtest" in argv else None)
    assert "Traceback" not in err
    if status is not None:
        assert status in (0, 1), (argv, status, err)
        if status == 1:
            assert len(err.strip().splitlines()) == 1, (argv, err)
