"""Start real QEMU or smm-hotplug-qemu with the same command line and talk to it.

qtest goes over the process's stdin/stdout; QMP over a unix socket, with qemu.qmp (QEMU's own
Python QMP library) as the client.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError
from qemu.qmp.legacy import QEMUMonitorProtocol

QEMU = "qemu-system-x86_64"
SETTLE = 0.6  # real QEMU resets fw_cfg once more just after start; SeaBIOS runs meanwhile
MODELLED_IRQS = {9}  # the SCI; real QEMU also floods IRQ 0 from the PIT SeaBIOS programs


def qemu_available() -> bool:
    return shutil.which(QEMU) is not None


class Target:
    def __init__(self, kind: str, args: list[str], raw_qmp: bool = False) -> None:
        self.kind = kind
        self.dir = tempfile.mkdtemp(prefix="smmhp-")
        self.sock = str(Path(self.dir) / "qmp.sock")
        cmd = [QEMU] if kind == "qemu" else [sys.executable, "-m", "smm_hotplug.interfaces.qemu.server"]
        full = [
            *cmd,
            *args,
            "-qtest",
            "stdio",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
            f"unix:{self.sock},server=on,wait=off",
        ]
        self.proc = subprocess.Popen(
            full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0
        )
        self.irqs: list[str] = []
        self._buf = b""
        deadline = time.time() + 10
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{kind} did not start: {' '.join(full)}")
            time.sleep(0.02)
        if kind == "qemu":
            time.sleep(SETTLE)
        self.raw: socket.socket | None = None
        # The socket file appears when the server binds it, a moment before it listens (QEMU and
        # the endpoint alike): a connection refused in between is tried again.
        while True:
            try:
                if raw_qmp:
                    self.raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    self.raw.connect(self.sock)
                else:
                    self.qmp = QEMUMonitorProtocol(self.sock)
                    self.greeting = self.qmp.connect(negotiate=True)
                break
            except (ConnectionRefusedError, ConnectError):
                if self.raw is not None:
                    self.raw.close()
                    self.raw = None
                if self.proc.poll() is not None or time.time() > deadline:
                    raise
                time.sleep(0.02)
        if raw_qmp:
            self._raw_buf = b""
            self.raw_greeting = self._raw_lines(1)[0]

    # -- raw QMP ------------------------------------------------------------------------------
    def _raw_lines(self, n: int | None, wait: float = 0.4) -> list[str]:
        """Read ``n`` CR LF lines (or, with None, whatever arrives within ``wait``)."""
        assert self.raw is not None
        lines: list[str] = []
        deadline = time.time() + (5.0 if n is not None else wait)
        while n is None or len(lines) < n:
            while b"\r\n" in self._raw_buf and (n is None or len(lines) < n):
                line, self._raw_buf = self._raw_buf.split(b"\r\n", 1)
                lines.append(line.decode())
            if n is not None and len(lines) >= n:
                break
            left = deadline - time.time()
            if left <= 0:
                break
            ready, _, _ = select.select([self.raw], [], [], left)
            if ready:
                chunk = self.raw.recv(65536)
                if not chunk:
                    break
                self._raw_buf += chunk
        return lines

    def raw_exchange(self, data: bytes) -> list[str]:
        """Send bytes; every line that comes back, with timestamps masked."""
        assert self.raw is not None
        self.raw.sendall(data)
        return [
            re.sub(r'"seconds": \d+, "microseconds": \d+', '"seconds": S, "microseconds": U', line)
            for line in self._raw_lines(None)
        ]

    # -- qtest ------------------------------------------------------------------------------
    def _line(self, timeout: float = 10.0) -> str:
        deadline = time.time() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no qtest answer")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise EOFError(f"{self.kind} closed the qtest channel")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def qtest(self, line: str) -> str:
        self.proc.stdin.write((line + "\n").encode())
        while True:
            answer = self._line()
            if answer.startswith("IRQ "):
                self._irq(answer)
                continue
            return answer

    def _irq(self, line: str) -> None:
        if int(line.split()[-1]) in MODELLED_IRQS:
            self.irqs.append(line)

    def drain_irqs(self, wait: float = 0.3) -> list[str]:
        """Asynchronous IRQ lines that arrived without a command (e.g. during a QMP call)."""
        end = time.time() + wait
        while time.time() < end:
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, end - time.time()))
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            self._buf += chunk
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"IRQ "):
                    self._irq(line.decode())
        out, self.irqs = self.irqs, []
        return out

    # -- QMP ----------------------------------------------------------------------------------
    def qmp_cmd(self, execute: str, **arguments: Any) -> dict:
        msg: dict = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        return self.qmp.cmd_obj(msg)

    def qmp_raw(self, msg: dict) -> dict:
        return self.qmp.cmd_obj(msg)

    def events(self, wait: float = 0.3) -> list[dict]:
        time.sleep(wait)
        evs = self.qmp.get_events(wait=False)
        self.qmp.clear_events()
        return [{"event": e["event"], "data": e.get("data")} for e in evs]

    def close(self) -> None:
        try:
            if self.raw is not None:
                self.raw.close()
            else:
                self.qmp.close()
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
