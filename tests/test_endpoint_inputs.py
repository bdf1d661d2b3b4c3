"""No input crashes or stalls smm-hotplug-qemu: each case runs the endpoint as a process, with its
sockets open, and checks it answers (promptly) and behaves as QEMU 7.2 does.  Where the behaviour
is QEMU's own (keeping on after a channel closes, SIGTERM, the tcp port), live QEMU is run too."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smm_hotplug.interfaces.qemu import jsonparse

ENDPOINT = [sys.executable, "-m", "smm_hotplug.interfaces.qemu.server"]
QEMU = shutil.which("qemu-system-x86_64")
REQUIRE_QEMU = os.environ.get("SMM_HOTPLUG_REQUIRE_QEMU") == "1"


def _targets() -> list:
    return [
        "ours",
        pytest.param("qemu", marks=pytest.mark.skipif(not QEMU and not REQUIRE_QEMU, reason="no QEMU")),
    ]


def _command(kind: str) -> list[str]:
    return [QEMU or "qemu-system-x86_64"] if kind == "qemu" else list(ENDPOINT)


@contextlib.contextmanager
def _running(args: list[str], kind: str = "ours", **popen) -> Iterator[subprocess.Popen]:
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("stdout", subprocess.DEVNULL)
    popen.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen([*_command(kind), *args], **popen)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


class Qmp:
    """A raw QMP client: bytes in, CR LF lines out."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.settimeout(30)
        self.buf = b""
        self.greeting = self.line()

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            assert chunk, "QMP closed"
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self, data: bytes) -> bytes:
        self.send(data)
        while True:
            line = self.line()
            if not line.startswith(b'{"timestamp"'):
                return line


def _qmp_endpoint(tmp: Path, *extra: str, **popen) -> tuple[contextlib.AbstractContextManager, str]:
    path = str(tmp / "qmp.sock")
    return _running(["-machine", "q35", "-qmp", f"unix:{path},server=on,wait=off", *extra], **popen), path


# -- QMP: QEMU's JSON limits, answered and survived --------------------------------------------------
def test_deep_nesting_huge_numbers_and_unclosed_brackets_get_qemus_answers(tmp_path):
    ctx, path = _qmp_endpoint(tmp_path)
    with ctx as proc:
        _wait_for(path, proc)
        qmp = Qmp(path)
        assert qmp.reply(b'{"execute":"qmp_capabilities"}\n') == b'{"return": {}}'
        deep = b"[" * 500 + b"]" * 500
        reply = qmp.reply(b'{"execute":"query-status","id":' + deep + b"}\n")
        assert reply.endswith(b', "id": ' + deep.replace(b"][", b"], [") + b"}")
        qmp.send(b"[" * 100_000 + b"\n")  # the streamer refuses every 1025th level
        errors = [qmp.line() for _ in range(100_000 // 1025)]
        assert set(errors) == {
            b'{"error": {"class": "GenericError", "desc": "JSON nesting depth limit exceeded"}}'
        }
        left_open = 100_000 - len(errors) * 1025  # still open, as in QEMU: close them
        assert qmp.reply(b"]" * left_open + b"\n").startswith(b'{"error": {"class": "GenericError"')
        reply = qmp.reply(b'{"execute":"query-status","id":' + b"9" * 5000 + b"}\n")
        assert reply.endswith(b'"id": inf}')  # strtod of an integer beyond 64 bits, printed %.17g
        reply = qmp.reply(b'{"execute":"query-status","id":"' + b"a" * 3_200_000 + b'"}\n')
        assert reply.count(b"a") >= 3_200_000
        assert proc.poll() is None


def test_json_streamer_is_linear_in_its_input():
    """A message of N bytes costs O(N) whatever the chunking (the old reader rescanned its buffer)."""

    def cost(size: int) -> float:
        data = b'{"execute":"x","id":"' + b"a" * size + b'"}'
        stream = jsonparse.Streamer()
        start = time.perf_counter()
        out = []
        for i in range(0, len(data), 4096):
            out += stream.feed(data[i : i + 4096])
        assert len(out) == 1 and len(out[0]["id"]) == size
        return time.perf_counter() - start

    small, large = min(cost(500_000) for _ in range(3)), min(cost(4_000_000) for _ in range(3))
    assert large < 20 * small + 0.05  # 8x the input: linear is ~8x, quadratic ~64x


def test_a_token_beyond_64_mib_is_refused_and_lexing_goes_on():
    stream = jsonparse.Streamer()
    out = stream.feed(b'"' + b"a" * jsonparse.MAX_TOKEN_SIZE)  # the quote makes it one byte too long
    assert [str(e) for e in out] == ["JSON token size limit exceeded"]
    assert stream.feed(b' {"x": 1}') == [{"x": 1}]


# -- qtest: huge lines, huge reads --------------------------------------------------------------------
def test_huge_qtest_lines_and_reads_are_answered_in_linear_time():
    with _running(
        ["-machine", "q35", "-qtest", "stdio", "-qtest-log", "none", "-accel", "qtest"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None

        def ask(line: bytes) -> tuple[float, bytes]:
            start = time.perf_counter()
            proc.stdin.write(line + b"\n")
            proc.stdin.flush()
            return time.perf_counter() - start, proc.stdout.readline()

        took, answer = ask(b"x" * 40_000_000)
        assert answer == b"FAIL Unknown command '" + b"x" * 40_000_000 + b"'\n"  # QEMU echoes it whole
        assert took < 20
        took, answer = ask(b"read 0 0x1000000")
        assert answer == b"OK 0x" + b"00" * (1 << 24) + b"\n" and took < 20
        took, answer = ask(b"write 0x100000 0x1000000 0x" + b"5a" * (1 << 24))
        assert answer == b"OK\n" and took < 20
        assert ask(b"readl 0x100000")[1] == b"OK 0x000000005a5a5a5a\n"


def test_a_huge_message_on_one_channel_does_not_hold_up_the_other(tmp_path):
    ctx, path = _qmp_endpoint(
        tmp_path, "-qtest", "stdio", "-qtest-log", "none", stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    with ctx as proc:
        _wait_for(path, proc)
        qmp = Qmp(path)
        qmp.reply(b'{"execute":"qmp_capabilities"}\n')
        sent = threading.Event()

        def flood() -> None:
            qmp.send(b'{"execute":"query-status","id":"')
            for _ in range(200):
                qmp.send(b"b" * 100_000)
            sent.set()

        thread = threading.Thread(target=flood)
        thread.start()
        slowest = 0.0
        while not sent.is_set():
            start = time.perf_counter()
            proc.stdin.write(b"endianness\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"OK little\n"
            slowest = max(slowest, time.perf_counter() - start)
        thread.join()
        assert slowest < 2.0
        assert qmp.reply(b'"}\n').count(b"b") >= 20_000_000


# -- the command line: tcp ports, help, version -------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", _targets())
def test_a_tcp_port_above_65535_wraps_as_getaddrinfo_makes_it_for_qemu(kind):
    """QEMU hands the port to getaddrinfo as text, and glibc takes it modulo 65536."""
    port = _free_port()
    spec = f"tcp:127.0.0.1:{port + 65536},server=on,wait=off"
    with _running(["-machine", "none", "-qmp", spec, "-display", "none"], kind) as proc:
        deadline = time.time() + 20
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.05)
        with sock:
            assert sock.recv(4096).startswith(
                b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}'
            )


@pytest.mark.parametrize("port", ["-1", "abc", "99999999999999999999"])
def test_a_port_getaddrinfo_refuses_is_one_line_like_qemus(port):
    spec = f"tcp:localhost:{port},server=on,wait=off"
    ours = subprocess.run([*ENDPOINT, "-qmp", spec], capture_output=True, text=True, timeout=60)
    assert ours.returncode == 1 and "Traceback" not in ours.stderr
    assert ours.stderr.count("\n") == 1
    assert f"-qmp {spec}: address resolution failed for localhost:{port}: " in ours.stderr
    if QEMU:
        theirs = subprocess.run(
            [QEMU, "-qmp", spec, "-display", "none", "-machine", "none"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert theirs.returncode == 1
        assert ours.stderr.split(": ", 1)[1] == theirs.stderr.split(": ", 1)[1]


@pytest.mark.parametrize("flag", ["-h", "-help", "--help", "-version", "--version"])
def test_help_and_version_print_and_exit_0(flag):
    out = subprocess.run([*ENDPOINT, flag], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.startswith("QEMU emulator version 7.2.22 ")
    assert ("usage: " in out.stdout) == ("help" in flag or flag == "-h")
    if QEMU:
        theirs = subprocess.run([QEMU, flag], capture_output=True, text=True, timeout=60)
        assert theirs.returncode == 0
        assert theirs.stdout.split("(")[0] == out.stdout.split("(")[0]  # "QEMU emulator version 7.2.22 "


# -- channels closing, standard input that is a file, signals -----------------------------------------
@pytest.mark.parametrize("kind", _targets())
@pytest.mark.parametrize("source", ["file", "devnull"])
def test_qtest_stdio_from_a_file_or_dev_null_is_read_and_the_machine_goes_on(kind, source, tmp_path):
    script = tmp_path / "qtest.txt"
    script.write_bytes(b"endianness\noutl 0xcf8 0x8000009c\ninb 0xcfe\n")
    with (
        open(script if source == "file" else os.devnull, "rb") as stdin,
        _running(
            [
                "-machine",
                "q35",
                "-qtest",
                "stdio",
                "-qtest-log",
                "/dev/null",
                "-display",
                "none",
                "-nodefaults",
            ],
            kind,
            stdin=stdin,
            stdout=subprocess.PIPE,
        ) as proc,
    ):
        if source == "file":
            assert [proc.stdout.readline() for _ in range(3)] == [b"OK little\n", b"OK\n", b"OK 0x0038\n"]
        time.sleep(1.5)
        assert proc.poll() is None  # QEMU does not stop at the end of its qtest input
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("kind", _targets())
def test_the_qtest_client_going_away_leaves_the_machine_running_with_qmp(kind, tmp_path):
    qtest_path, qmp_path = str(tmp_path / "qtest.sock"), str(tmp_path / "qmp.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(qtest_path)
    listener.listen(1)
    listener.settimeout(30)
    args = ["-machine", "q35", "-qtest", f"unix:{qtest_path}", "-qtest-log", "/dev/null", "-display", "none"]
    with _running([*args, "-qmp", f"unix:{qmp_path},server=on,wait=off"], kind) as proc:
        client, _ = listener.accept()
        client.sendall(b"endianness\n")
        assert client.recv(100) == b"OK little\n"
        client.close()
        _wait_for(qmp_path, proc)
        qmp = Qmp(qmp_path)
        qmp.reply(b'{"execute":"qmp_capabilities"}\n')
        time.sleep(1)
        assert qmp.reply(b'{"execute":"query-status"}\n').startswith(b'{"return": {"status": "running"')
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        shutdown = qmp.line()
        assert b'"event": "SHUTDOWN"' in shutdown and b'"reason": "host-signal"' in shutdown
        assert b"terminating" not in proc.stderr.read()  # qtest drives the machine: QEMU says nothing


def test_sigterm_without_qtest_is_reported_like_qemu(tmp_path):
    ctx, path = _qmp_endpoint(tmp_path)
    with ctx as proc:
        _wait_for(path, proc)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert (
            proc.stderr.read().decode()
            == f"server.py: terminating on signal 15 from pid {os.getpid()} ({sys.executable})\n"
        )


@pytest.mark.parametrize(
    "args",
    [
        ["-chardev", "socket,path=/nonexistent/q.sock,id=char0", "-mon", "chardev=char0,mode=control"],
        ["-qmp", "unix:/nonexistent/q.sock"],
        ["-qtest", "unix:/nonexistent/q.sock"],
        ["-chardev", "socket,path=/tmp/x.sock"],
        ["-mon", "chardev=nochar,mode=control"],
        ["-chardev", "frob,id=x"],
        ["-cpu", "nonesuch"],
        ["-qtest-log"],
    ],
)
def test_chardev_and_option_errors_are_qemus_first_line(args):
    ours = subprocess.run([*ENDPOINT, "-machine", "none", *args], capture_output=True, text=True, timeout=60)
    assert ours.returncode == 1 and len(ours.stderr.splitlines()) == 1
    if QEMU:
        theirs = subprocess.run(
            [QEMU, "-machine", "none", "-display", "none", *args], capture_output=True, text=True, timeout=60
        )
        assert theirs.returncode == 1
        assert ours.stderr.split(": ", 1)[1] == theirs.stderr.splitlines()[0].split(": ", 1)[1] + "\n"
