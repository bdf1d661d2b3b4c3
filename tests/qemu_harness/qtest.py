"""A small libqtest: start a machine exactly as QEMU's libqtest does, speak qtest and QMP to it.

Like tests/qtest/libqtest.c (qtest_init_without_qmp_handshake, qtest_init, qtest_quit), the
harness listens on two unix sockets, starts ``exec BINARY -qtest unix:QTEST -qtest-log /dev/null
-chardev socket,path=QMP,id=char0 -mon chardev=char0,mode=control -display none ARGS -accel qtest``
through ``/bin/sh -c``, accepts the qtest connection, then the QMP one, asks ``endianness``,
reads the QMP greeting and negotiates capabilities (qemu.qmp, QEMU's own Python QMP library, as
the server side), and at the end sends SIGTERM and expects exit status 0.

The binary is whatever ``QTEST_QEMU_BINARY`` names — real QEMU or smm-hotplug-qemu; the tests
do not know which.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

SOCKET_TIMEOUT = 50  # seconds, libqtest's SOCKET_TIMEOUT


def libqtest_command(binary: str, qtest_path: str, qmp_path: str, args: str) -> str:
    """The shell command libqtest runs (qtest_init_without_qmp_handshake), QTEST_LOG unset."""
    return (
        f"exec {binary} -qtest unix:{qtest_path} -qtest-log /dev/null "
        f"-chardev socket,path={qmp_path},id=char0 -mon chardev=char0,mode=control "
        f"-display none {args} -accel qtest"
    )


class QTestState:
    def __init__(self, args: str, binary: str | None = None) -> None:
        binary = binary or os.environ.get("QTEST_QEMU_BINARY", "qemu-system-x86_64")
        self.dir = Path(tempfile.mkdtemp(prefix="qtest-"))
        qtest_path = self.dir / f"qtest-{os.getpid()}.sock"
        qmp_path = self.dir / f"qtest-{os.getpid()}.qmp"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(qtest_path))
        listener.listen(1)
        self.qmp_client = QEMUMonitorProtocol(str(qmp_path), server=True)
        self.command = libqtest_command(binary, str(qtest_path), str(qmp_path), args)
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", self.command], env={**os.environ, "QEMU_AUDIO_DRV": "none"}
        )
        listener.settimeout(SOCKET_TIMEOUT)
        self.sock, _ = listener.accept()
        listener.close()
        self.qmp_client.accept(timeout=SOCKET_TIMEOUT)
        os.unlink(qtest_path)
        os.unlink(qmp_path)
        self.file = self.sock.makefile("rwb", buffering=0)
        self.irqs: list[str] = []
        assert self._cmd("endianness") == ["little"]

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

    def quit(self) -> int:
        """qtest_quit: SIGTERM, wait, and the exit status must be 0."""
        try:
            self.proc.send_signal(signal.SIGTERM)
            status = self.proc.wait(timeout=30)
        finally:
            self.qmp_client.close()
            self.sock.close()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert status == 0, f"{self.command!r} ended with status {status}"
        return status
