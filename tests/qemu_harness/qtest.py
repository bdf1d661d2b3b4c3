"""A small libqtest: start a machine, speak qtest over a socket the harness listens on (QEMU
connects to it, as with libqtest's ``-qtest unix:PATH``) and QMP with qemu.qmp.

The binary is whatever ``QTEST_QEMU_BINARY`` names — real QEMU or smm-hotplug-qemu; the tests
do not know which.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol


class QTestState:
    def __init__(self, args: str, binary: str | None = None, accel_qtest: bool = True) -> None:
        binary = binary or os.environ.get("QTEST_QEMU_BINARY", "qemu-system-x86_64")
        self.dir = Path(tempfile.mkdtemp(prefix="qtest-"))
        qtest_path = self.dir / "qtest.sock"
        qmp_path = self.dir / "qmp.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(qtest_path))
        listener.listen(1)
        cmd = [
            *shlex.split(binary),
            *shlex.split(args),
            "-qtest",
            f"unix:{qtest_path}",
            "-qmp",
            f"unix:{qmp_path},server=on,wait=off",
            "-display",
            "none",
            "-nodefaults",
        ]
        if accel_qtest:
            cmd += ["-accel", "qtest"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        listener.settimeout(10)
        self.sock, _ = listener.accept()
        listener.close()
        self.file = self.sock.makefile("rwb", buffering=0)
        deadline = time.time() + 10
        while not qmp_path.exists() and time.time() < deadline:
            time.sleep(0.01)
        self.qmp_client = QEMUMonitorProtocol(str(qmp_path))
        self.qmp_client.connect(negotiate=True)
        self.irqs: list[str] = []

    # -- qtest --------------------------------------------------------------------------------
    def _cmd(self, line: str) -> list[str]:
        self.file.write((line + "\n").encode())
        while True:
            answer = self.file.readline().decode().rstrip("\n")
            if answer.startswith("IRQ "):
                self.irqs.append(answer)
                continue
            words = answer.split(" ")
            assert words[0] == "OK", f"qtest: {line!r} -> {answer!r}"
            return words[1:]

    def outb(self, port: int, v: int) -> None:
        self._cmd(f"outb 0x{port:x} 0x{v:x}")

    def outw(self, port: int, v: int) -> None:
        self._cmd(f"outw 0x{port:x} 0x{v:x}")

    def outl(self, port: int, v: int) -> None:
        self._cmd(f"outl 0x{port:x} 0x{v:x}")

    def inb(self, port: int) -> int:
        return int(self._cmd(f"inb 0x{port:x}")[0], 16)

    def inw(self, port: int) -> int:
        return int(self._cmd(f"inw 0x{port:x}")[0], 16)

    def inl(self, port: int) -> int:
        return int(self._cmd(f"inl 0x{port:x}")[0], 16)

    def readb(self, addr: int) -> int:
        return int(self._cmd(f"readb 0x{addr:x}")[0], 16)

    def readl(self, addr: int) -> int:
        return int(self._cmd(f"readl 0x{addr:x}")[0], 16)

    def writeb(self, addr: int, v: int) -> None:
        self._cmd(f"writeb 0x{addr:x} 0x{v:x}")

    def writel(self, addr: int, v: int) -> None:
        self._cmd(f"writel 0x{addr:x} 0x{v:x}")

    def memread(self, addr: int, size: int) -> bytes:
        return bytes.fromhex(self._cmd(f"read 0x{addr:x} {size}")[0][2:])

    def memwrite(self, addr: int, data: bytes) -> None:
        self._cmd(f"write 0x{addr:x} {len(data)} 0x{data.hex()}")

    # -- PCI (qpci_pc: configuration mechanism #1) ----------------------------------------------
    def pci_config_readb(self, devfn: int, offset: int) -> int:
        self.outl(0xCF8, 0x80000000 | devfn << 8 | (offset & 0xFC))
        return self.inb(0xCFC + (offset & 3))

    def pci_config_readw(self, devfn: int, offset: int) -> int:
        self.outl(0xCF8, 0x80000000 | devfn << 8 | (offset & 0xFC))
        return self.inw(0xCFC + (offset & 2))

    def pci_config_writeb(self, devfn: int, offset: int, v: int) -> None:
        self.outl(0xCF8, 0x80000000 | devfn << 8 | (offset & 0xFC))
        self.outb(0xCFC + (offset & 3), v)

    # -- QMP ------------------------------------------------------------------------------------
    def qmp(self, execute: str, **arguments: Any) -> dict:
        msg: dict = {"execute": execute}
        if arguments:
            msg["arguments"] = arguments
        return self.qmp_client.cmd_obj(msg)

    def quit(self) -> None:
        try:
            self.qmp_client.close()
        finally:
            self.sock.close()
            self.proc.kill()
            self.proc.wait(timeout=10)
