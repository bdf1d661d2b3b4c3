"""Scripted sessions run against real QEMU and smm-hotplug-qemu; every answer is recorded.

A session is (command-line arguments, function of a Target returning a transcript).  The
transcripts of both must be identical.  Sessions avoid what crashes real QEMU 7.2 under qtest
(empty or malformed qtest lines, an APM_CNT write other than 2/3 before broadcast SMI is
negotiated, any device_add after an eject).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

from conformance.targets import SETTLE, Target

Transcript = list[Any]
FILES = {"features-ok": 0x28, "requested-features": 0x29, "supported-features": 0x2A, "e820": 0x25}


class Recorder:
    def __init__(self, t: Target) -> None:
        self.t = t
        self.out: Transcript = []

    def q(self, line: str) -> str:
        answer = self.t.qtest(line)
        irqs = self.t.irqs
        self.t.irqs = []
        self.out.append(["qtest", line, answer, irqs] if irqs else ["qtest", line, answer])
        return answer

    def qmp(self, execute: str, **args: Any) -> dict:
        resp = _normalize(self.t.qmp_cmd(execute, **args))
        self.out.append(["qmp", execute, args, resp])
        return resp

    def events(self) -> None:
        self.out.append(["events", self.t.events()])

    def irqs(self) -> None:
        self.out.append(["irqs", self.t.drain_irqs()])

    def note(self, key: str, value: Any) -> None:
        self.out.append(["note", key, value])


def _normalize(resp: Any) -> Any:
    """A vCPU's host thread id differs between runs; everything else must match exactly."""
    if isinstance(resp, dict):
        host_tid = "cpu-index" in resp
        return {k: ("<tid>" if k == "thread-id" and host_tid else _normalize(v)) for k, v in resp.items()}
    if isinstance(resp, list):
        return [_normalize(v) for v in resp]
    return resp


def cfg_read(r: Recorder, dev: int, reg: int, size: str = "b") -> str:
    r.q(f"outl 0xcf8 0x{0x80000000 | dev << 11 | (reg & 0xFC):x}")
    return r.q(f"in{size} 0x{0xCFC + (reg & 3):x}")


def cfg_write(r: Recorder, dev: int, reg: int, value: int, size: str = "b") -> None:
    r.q(f"outl 0xcf8 0x{0x80000000 | dev << 11 | (reg & 0xFC):x}")
    r.q(f"out{size} 0x{0xCFC + (reg & 3):x} 0x{value:x}")


def dma(r: Recorder, control: int, length: int, address: int, desc: int = 0x20000) -> None:
    r.q(f"write 0x{desc:x} 16 0x{struct.pack('>IIQ', control, length, address).hex()}")
    r.q("outl 0x514 0x0")
    r.q(f"outl 0x518 0x{int.from_bytes(desc.to_bytes(4, 'big'), 'little'):x}")
    r.q(f"read 0x{desc:x} 4")


def negotiate(r: Recorder, features: int) -> None:
    r.q(f"write 0x21000 8 0x{struct.pack('<Q', features).hex()}")
    dma(r, FILES["requested-features"] << 16 | 0x08 | 0x10, 8, 0x21000)
    r.q(f"outw 0x510 0x{FILES['features-ok']:x}")
    r.q("inb 0x511")


# -- sessions ----------------------------------------------------------------------------------------
def smbase_window(r: Recorder) -> None:
    for reg in (0x9C, 0x9D, 0x9E):
        cfg_read(r, 0, reg)
    cfg_read(r, 0, 0x9C, "l")
    r.q("writel 0x38000 0xdeadbeef")
    for addr, val in ((0x2FFFF, 0x5A), (0x30000, 0x11), (0x4FFFF, 0x22), (0x50000, 0xA5)):
        r.q(f"writeb 0x{addr:x} 0x{val:x}")
    r.q("readl 0x38000")
    for value in (0x02, 0x01, 0x03, 0x80, 0xFE):  # discarded before the query
        cfg_write(r, 0, 0x9C, value)
        cfg_read(r, 0, 0x9C)
    cfg_write(r, 0, 0x9C, 0xFF)
    cfg_read(r, 0, 0x9C)
    cfg_write(r, 0, 0x9C, 0x01)
    cfg_read(r, 0, 0x9C)
    cfg_write(r, 0, 0x9C, 0x02)
    cfg_read(r, 0, 0x9C)
    for value in (0x00, 0x01, 0xFF, 0x03):
        cfg_write(r, 0, 0x9C, value)
        cfg_read(r, 0, 0x9C)
    for line in (
        "readl 0x38000",
        "readb 0x30000",
        "readb 0x2ffff",
        "readb 0x4ffff",
        "readb 0x50000",
        "readl 0x2fffe",
        "readq 0x4fffc",
        "read 0x2fffc 8",
        "readw 0x3ffff",
        "write 0x38000 4 0x01020304",
        "readl 0x38000",
        "writeb 0x4ffff 0x00",
        "readb 0x4ffff",
        "b64read 0x4fffe 4",
        "memset 0x30000 16 0x00",
        "readq 0x30000",
    ):
        r.q(line)
    r.qmp("system_reset")
    time.sleep(SETTLE if r.t.kind == "qemu" else 0)
    r.events()
    cfg_read(r, 0, 0x9C)
    r.q("readl 0x38000")
    r.q("readb 0x30000")


def smram_tseg(r: Recorder) -> None:
    cfg_read(r, 0, 0x9C, "l")
    r.q("writel 0xff00000 0xcafef00d")
    r.q("writel 0xfeffffc 0x01020304")
    r.q("writel 0xfffff00 0x55667788")
    cfg_write(r, 0, 0x9D, 0x40)
    cfg_read(r, 0, 0x9D)
    cfg_write(r, 0, 0x9D, 0x0A)
    cfg_write(r, 0, 0x9E, 0x01)
    cfg_read(r, 0, 0x9E)
    cfg_read(r, 0, 0x9D)
    for line in (
        "readl 0xff00000",
        "writel 0xff00000 0",
        "readl 0xfeffffc",
        "readq 0xfeffffc",
        "readl 0xfffff00",
        "read 0xfeffffe 4",
    ):
        r.q(line)
    cfg_write(r, 0, 0x9D, 0x4A)  # D_OPEN does not open TSEG
    r.q("readl 0xff00000")
    cfg_write(r, 0, 0x9E, 0x03)  # 2 MiB
    cfg_read(r, 0, 0x9E)
    r.q("readl 0xfeffffc")
    cfg_write(r, 0, 0x9E, 0x01)
    cfg_write(r, 0, 0x9D, 0x1A)  # D_LCK
    cfg_read(r, 0, 0x9D)
    for value in (0x4A, 0x0A, 0x3A, 0x02):
        cfg_write(r, 0, 0x9D, value)
        cfg_read(r, 0, 0x9D)
    cfg_write(r, 0, 0x9E, 0x00)
    cfg_read(r, 0, 0x9E)
    r.q("readl 0xff00000")
    cfg_read(r, 0, 0x50, "w")
    cfg_write(r, 0, 0x50, 0x1234, "w")
    cfg_read(r, 0, 0x50, "w")
    cfg_write(r, 0, 0x50, 0xFFFF, "w")
    cfg_read(r, 0, 0x50, "w")
    cfg_read(r, 0, 0x50, "l")
    cfg_read(r, 0, 0x00, "l")


def pci_identity(r: Recorder) -> None:
    """Vendor, device, revision, class and header type of the MCH and the ICH9 LPC (the
    command and status words are SeaBIOS's doing on Debian's QEMU and are left out)."""
    for dev in (0, 31):
        for reg in (0x00, 0x02, 0x08, 0x09, 0x0A, 0x0B, 0x0E):
            cfg_read(r, dev, reg, "w" if reg in (0x00, 0x02) else "b")


def fw_cfg(r: Recorder) -> None:
    for key, n in ((0x00, 4), (0x01, 4), (0x05, 2), (0x0F, 2), (0x03, 8)):
        r.q(f"outw 0x510 0x{key:x}")
        for _ in range(n + 1):
            r.q("inb 0x511")
    r.q("inl 0x514")
    r.q("inl 0x518")
    r.q("inw 0x510")
    dma(r, 0x19 << 16 | 0x08 | 0x02, 4 + 64 * 15, 0x10000)
    r.q("b64read 0x10000 964")
    for name in ("e820", "supported-features", "requested-features"):
        dma(r, FILES[name] << 16 | 0x08 | 0x02, 64, 0x12000)
        r.q("read 0x12000 64")
    dma(r, FILES["supported-features"] << 16 | 0x08 | 0x10, 8, 0x12000)  # read-only: error
    r.q(f"outw 0x510 0x{FILES['requested-features']:x}")
    r.q("outb 0x511 0x7")  # data-port writes are ignored
    r.q(f"outw 0x510 0x{FILES['requested-features']:x}")
    r.q("inb 0x511")


def _negotiation(features: int) -> Callable[[Recorder], None]:
    def session(r: Recorder) -> None:
        negotiate(r, features)
        r.qmp(
            "device_add",
            driver="qemu64-x86_64-cpu",
            id="cpu2",
            **{"socket-id": 0, "core-id": 2, "thread-id": 0},
        )
        r.qmp(
            "device_add",
            driver="qemu64-x86_64-cpu",
            id="cpu9",
            **{"socket-id": 0, "core-id": 9, "thread-id": 0},
        )
        r.qmp(
            "device_add",
            driver="qemu64-x86_64-cpu",
            id="cpu0",
            **{"socket-id": 0, "core-id": 0, "thread-id": 0},
        )
        r.qmp("device_del", id="cpu2")
        r.q("outb 0xcd8 0x0")
        r.qmp(
            "device_add",
            driver="qemu64-x86_64-cpu",
            id="cpu3",
            **{"socket-id": 0, "core-id": 3, "thread-id": 0},
        )
        r.qmp("device_del", id="cpu3")
        r.qmp("device_del", id="nope")
        r.q(f"outw 0x510 0x{FILES['features-ok']:x}")
        r.q("inb 0x511")

    return session


def cpu_hotplug(r: Recorder) -> None:
    for line in ("inb 0xcd8", "inw 0xcd8", "inl 0xcd8", "inb 0xcd9", "inb 0xcf7", "inb 0xcdc"):
        r.q(line)
    r.qmp(
        "device_add", driver="qemu64-x86_64-cpu", id="cpu2", **{"socket-id": 0, "core-id": 2, "thread-id": 0}
    )
    for line in (
        "inb 0x620",
        "inb 0xcd8",
        "outb 0x620 0x4",
        "inb 0x620",
        "outb 0xcd8 0x0",
        "inl 0xcd8",
        "inb 0xcdc",
        "inb 0xce4",
        "inl 0xce4",
        "outl 0xcd8 0x2",
        "inb 0xcdc",
    ):
        r.q(line)
    r.qmp(
        "device_add", driver="qemu64-x86_64-cpu", id="cpu3", **{"socket-id": 0, "core-id": 3, "thread-id": 0}
    )
    for line in (
        "inb 0x620",
        "outl 0xcd8 0x0",
        "outb 0xcdd 0x0",
        "inl 0xce0",
        "inb 0xcdc",
        "inw 0xcdc",
        "inl 0xcdc",
        "inb 0xcdd",
        "outb 0xcdd 0x3",
        "inl 0xce0",
        "inl 0xcd8",
        "inb 0xce1",
        "outb 0xcdc 0x2",
        "inb 0xcdc",
        "outl 0xcd8 0x0",
        "outb 0xcdd 0x0",
        "inl 0xce0",
    ):
        r.q(line)
    r.qmp("device_del", id="cpu3")
    r.qmp("device_del", id="/machine/unattached/device[0]")
    for line in (
        "outl 0xcd8 0x3",
        "inb 0xcdc",
        "outb 0xcdc 0xe",
        "inb 0xcdc",
        "outb 0xcdc 0x4",
        "inb 0xcdc",
        "outb 0xcdc 0x10",
        "inb 0xcdc",
        "outl 0xcd8 0x1",
        "outb 0xcdd 0x0",
        "inl 0xce0",
        "outb 0xcdd 0x7",
        "inl 0xce0",
        "outl 0xcd8 0x9",
        "inb 0xcdc",
        "inl 0xce0",
        "outb 0xcdd 0x3",
        "outl 0xcd8 0x0",
        "outb 0xcdc 0x10",
        "outb 0xcdc 0x8",
        "inb 0xcdc",
    ):
        r.q(line)
    # _OST for cpu3, then for the boot CPU (no device id) and an empty slot.
    for sel, source, status in ((3, 0x1, 0x0), (0, 0x103, 0x8F), (1, 0x3, 0x0)):
        for line in (
            f"outl 0xcd8 0x{sel:x}",
            "outb 0xcdd 0x1",
            f"outl 0xce0 0x{source:x}",
            "outb 0xcdd 0x2",
            f"outl 0xce0 0x{status:x}",
        ):
            r.q(line)
    r.events()
    r.qmp("query-hotpluggable-cpus")
    # Eject last: real QEMU 7.2 crashes on any device_add after an eject.
    for line in ("outl 0xcd8 0x3", "outb 0xcdc 0x8", "inb 0xcdc", "inb 0xcd8"):
        r.q(line)
    r.events()
    r.qmp("query-cpus-fast")
    r.qmp("query-hotpluggable-cpus")


def qmp_cpus(r: Recorder) -> None:
    r.qmp("query-hotpluggable-cpus")
    r.qmp("query-cpus-fast")
    base = {"driver": "qemu64-x86_64-cpu"}
    attempts = [
        {**base, "id": "cpu2", "socket-id": 0, "core-id": 2, "thread-id": 0},
        {**base, "socket-id": 0, "core-id": 3, "thread-id": 0},
        {**base, "id": "cpu2", "socket-id": 0, "core-id": 3, "thread-id": 0},
        {**base, "id": "x1", "socket-id": 0, "thread-id": 0},
        {**base, "id": "x2", "core-id": 3, "thread-id": 0},
        {**base, "id": "x3", "socket-id": 0, "core-id": 3},
        {**base, "id": "x4", "socket-id": 0, "core-id": 9, "thread-id": 0},
        {**base, "id": "x5", "socket-id": 1, "core-id": 1, "thread-id": 0},
        {**base, "id": "x6", "socket-id": 0, "core-id": 1, "thread-id": 1},
        {**base, "id": "x7", "socket-id": 0, "core-id": 1, "thread-id": 0},
        {**base, "id": "x8", "socket-id": 0, "core-id": "abc", "thread-id": 0},
        {**base, "id": "x9", "socket-id": 0, "core-id": 1, "thread-id": 0, "frob": 1},
        {"driver": "bogus-cpu", "id": "x10"},
        {"id": "x11"},
        {"driver": "max-x86_64-cpu", "id": "x12", "socket-id": 0, "core-id": 3, "thread-id": 0},
        {"driver": "x86_64-cpu", "id": "x13"},
        {**base, "id": "1bad", "socket-id": 0, "core-id": 3, "thread-id": 0},
        {**base, "id": "x14", "socket-id": 0, "core-id": 3, "thread-id": 0, "die-id": 1},
        {**base, "id": "x15", "socket-id": 0, "core-id": 4294967296, "thread-id": 0},
    ]
    for args in attempts:
        r.qmp("device_add", **args)
    r.qmp("query-hotpluggable-cpus")
    r.qmp("query-cpus-fast")
    r.qmp("device_del", id="nonexistent")
    r.qmp("device_del")
    r.qmp("device_del", id=5)
    r.qmp("device_del", id="cpu2", x=1)
    r.qmp("device_del", id="/machine/unattached/device[0]")
    r.qmp("query-status")
    r.qmp("query-version")
    r.qmp("frobnicate")


def qmp_topology(r: Recorder) -> None:
    r.qmp("query-hotpluggable-cpus")
    r.qmp("device_add", driver="qemu64-x86_64-cpu", id="c3", **{"socket-id": 1, "core-id": 0, "thread-id": 1})
    r.qmp("device_add", driver="qemu64-x86_64-cpu", **{"socket-id": 0, "core-id": 0, "thread-id": 1})
    for bad in (
        {"socket-id": 2, "core-id": 0, "thread-id": 0},
        {"socket-id": 0, "core-id": 1, "thread-id": 0},
        {"socket-id": 0, "core-id": 0, "thread-id": 2},
        {"socket-id": 2, "core-id": 5, "thread-id": 3},
    ):
        r.qmp("device_add", driver="qemu64-x86_64-cpu", id="bad", **bad)
    r.qmp("query-hotpluggable-cpus")
    r.qmp("query-cpus-fast")


def sparse_topology(r: Recorder) -> None:
    """Two sockets of two dies of three cores: APIC IDs 0-2, 4-6, 8-10, 12-14.  The legacy
    bitmap is by APIC ID, the modern block's selector is the CPU index and its GET_ARCH_ID
    answers the APIC ID; fw_cfg's max-cpus is one above the highest APIC ID."""
    r.qmp("query-hotpluggable-cpus")
    for line in ("outw 0x510 0xf", "inb 0x511", "inb 0x511", "outw 0x510 0x5", "inb 0x511"):
        r.q(line)
    cpu = {"driver": "qemu64-x86_64-cpu"}
    r.qmp("device_add", **cpu, id="c5", **{"socket-id": 0, "die-id": 1, "core-id": 2, "thread-id": 0})
    for bad in (
        {"socket-id": 1, "core-id": 0, "thread-id": 0},
        {"socket-id": 1, "die-id": 2, "core-id": 0, "thread-id": 0},
        {"socket-id": 2, "die-id": 0, "core-id": 0, "thread-id": 0},
        {"socket-id": 1, "die-id": 0, "core-id": 3, "thread-id": 0},
        {"apic-id": 3},
        {"apic-id": 14},
    ):
        r.qmp("device_add", **cpu, id="bad", **bad)
    r.qmp("device_add", **cpu, id="c7", **{"apic-id": 9})
    for line in ("inb 0xcd8", "inb 0xcd9", "outb 0xcd8 0x0"):
        r.q(line)
    for sel in (0, 5, 7, 11, 12):
        r.q(f"outl 0xcd8 0x{sel:x}")
        r.q("outb 0xcdd 0x3")
        r.q("inl 0xce0")
        r.q("inb 0xcdc")
    r.q("outl 0xcd8 0x0")
    r.q("outb 0xcdd 0x0")
    r.q("inl 0xce0")
    r.qmp("query-hotpluggable-cpus")
    r.qmp("query-cpus-fast")


def qtest_formats(r: Recorder) -> None:
    for line in (
        "outb 0x80 0x1",
        "inb 0x80",
        "inw 0x80",
        "inl 0x80",
        "inb 0xffff",
        "writeq 0x1000 0x8877665544332211",
        "readb 0x1000",
        "readw 0x1000",
        "readl 0x1000",
        "readq 0x1000",
        "read 0x1000 3",
        "read 0x1000 8",
        "b64read 0x1000 8",
        "b64read 0x1000 3",
        "b64read 0x1000 0",
        "writeb 0x1000 0x1234",
        "readb 0x1000",
        "writew 0x1000 0x123456",
        "readw 0x1000",
        "writel 0x1000 0x123456789a",
        "readl 0x1000",
        "writeq 0x1000 -1",
        "readq 0x1000",
        "writeq 0x1000 -2",
        "readq 0x1000",
        "writeb 0x1000 4096",
        "readb 0x1000",
        "readq 010000",
        "writeb 4096 +5",
        "readb 0x1000",
        "writeq 0x1000 0xFFFFFFFFFFFFFFFF",
        "readq 0x1000",
        "write 0x1000 4 0x1",
        "read 0x1000 4",
        "write 0x1000 2 0x010203",
        "read 0x1000 4",
        "write 0x1000 4 01020304",
        "read 0x1000 4",
        "write 0x1000 4 0xzz11",
        "read 0x1000 4",
        "write 0x1000 4 0xAbCd",
        "read 0x1000 4",
        "write 0x1000 4 0x",
        "write 0x1000 0 0x00",
        "b64write 0x1000 4 !!!",
        "read 0x1000 4",
        "b64write 0x1000 4 AQI=",
        "read 0x1000 4",
        "b64write 0x1000 2 AQIDBA==",
        "read 0x1000 4",
        "b64write 0x1000 0 AA==",
        "memset 0x1000 4 0xab",
        "read 0x1000 4",
        "memset 0x1000 2 0x1234",
        "read 0x1000 4",
        "memset 0x1000 2 -1",
        "read 0x1000 4",
        "memset 0x1000 0 0x55",
        "read 0x1000 4",
        "readb 0xfffffffffffffff0",
        "writeq 0x10000000000 5",
        "readq 0x10000000000",
        "endianness",
        "endianness extra",
        "frobnicate 1 2",
        "OUTB 0x80 0x1",
        " ",
        "readq 0x1000  ",
        "outb 0x80 1 2",
        "readb 0x1000 junk",
        "clock_step",
        "clock_step 1000",
        "clock_set 5000",
    ):
        r.q(line)


def qmp_wire(r: Recorder) -> None:
    """Byte-exact QMP: greeting, CR LF, key order, id placement, malformed JSON."""
    t = r.t
    r.note("greeting-line", t.raw_greeting)
    for chunk in (
        b'{"execute":"query-status"}\n',
        b'{"execute":"qmp_capabilities","id":"x"}\n',
        b'{"execute":"qmp_capabilities"}\n',
        b'{"execute":"query-status","id":{"b":1,"a":2}}\n',
        b'{"execute":"query-version"}\n',
        b'{"execute":"frobnicate","id":7}\n',
        b"[1,2]\n",
        b'"str"\n',
        b"{}\n",
        b'{"id":1}\n',
        b'{"execute": 5}\n',
        b'{"execute":"query-status","arguments":[]}\n',
        b'{"execute":"query-status","arguments":{"x":1}}\n',
        b'{"execute":"query-status","foo":1}\n',
        b'{"execute":"query-status",}\n',
        b"junk\n",
        b"@\n",
        b'{"execute":"query-status"} {"execute":"query-status","id":[1]}\n',
        b"{'execute':'query-status'}\n",
        b'{"execute":\n',
        b'"query-status"}\n',
        rb'{"execute":"query-status","id":"\u00e9/\n"}' + b"\n",
        b'{"execute":"qmp_capabilities","arguments":{"enable":["foo"]}}\n',
    ):
        r.out.append(["wire", chunk.decode(), t.raw_exchange(chunk)])


def irq_lines(r: Recorder) -> None:
    r.q("irq_intercept_in /machine/nonexistent")
    r.q("irq_intercept_in ioapic")
    r.q("irq_intercept_in ioapic")
    r.q("irq_intercept_out ioapic")
    r.q("irq_intercept_in /machine/unattached/device[0]")
    r.q("outb 0x628 0x4")
    r.qmp(
        "device_add", driver="qemu64-x86_64-cpu", id="cpu2", **{"socket-id": 0, "core-id": 2, "thread-id": 0}
    )
    r.irqs()
    r.q("inb 0x620")
    r.q("outb 0x620 0x4")
    r.q("inb 0x620")
    r.q("outb 0x628 0x0")
    r.qmp(
        "device_add", driver="qemu64-x86_64-cpu", id="cpu3", **{"socket-id": 0, "core-id": 3, "thread-id": 0}
    )
    r.irqs()
    r.q("inb 0x620")
    r.q("outb 0x628 0x4")
    r.q("outb 0x628 0x0")
    r.q("outb 0x628 0x4")
    r.q("outb 0x620 0x4")
    for level in ("1", "1", "0", "5", "-1", "0"):
        r.q(f"set_irq_in ioapic unnamed-gpio-in 5 {level}")


def qmp_limits(r: Recorder) -> None:
    """QEMU's JSON parser at its edges: nesting, numbers out of range, strays, bad escapes."""
    t = r.t
    t.raw_exchange(b'{"execute":"qmp_capabilities"}\n')
    deep = b"[" * 500 + b"]" * 500
    for chunk in (
        b'{"execute":"query-status","id":' + deep + b"}\n",
        b"[" * 1024 + b"]" * 1024 + b"\n",
        b"[" * 1025 + b"\n",
        b"]" * 3 + b"\n",
        b"{" * 1030 + b"\n",
        b"[" * 5000 + b"\n",
        b'{"execute":"query-status","id":' + b"7" * 5000 + b"}\n",
        b'{"execute":"query-status","id":18446744073709551615}\n',
        b'{"execute":"query-status","id":18446744073709551616}\n',
        b'{"execute":"query-status","id":-9223372036854775809}\n',
        b'{"execute":"query-status","id":1e400}\n',
        b'{"execute":"query-status","id":-1e400}\n',
        b'{"execute":"query-status","id":0.1}\n',
        b'{"execute":"query-status","id":-0}\n',
        b'{"execute":"query-status","id":1E+2}\n',
        b"-x\n",
        b"01\n",
        b"1.\n",
        b"1e\n",
        b"\x00\n",
        b"\x01\n",
        b"\xff\n",
        b"Null\n",
        b"tru\n",
        b'"\\q"\n',
        b'"\\u12"\n',
        b'"\\uD800"\n',
        b'"\\uDC00"\n',
        b'"\\uD800\\u0041"\n',
        b'"\\uFFFE"\n',
        b'"\xc3"\n',
        b'"\xef\xbf\xbe"\n',
        b'"\xc0\x80"\n',
        b'"tab\there"\n',
        b'{"a":1,"a":2}\n',
        b'{"a" 1}\n',
        b"{1:2}\n",
        b'{"a":}\n',
        b"[1,]\n",
        b"[1 2]\n",
        b'{"execute":"query-status","id":"x' + b"y" * 5000 + b'"}\n',
        b'{"execute":"query-status","id":"\\u00e9\\ud83d\\ude00"}\n',
    ):
        shown = chunk.decode("latin-1")
        r.out.append(
            [
                "wire",
                shown if len(shown) < 200 else f"{shown[:100]}... ({len(chunk)} bytes)",
                t.raw_exchange(chunk),
            ]
        )


def machine_compat(r: Recorder) -> None:
    """What the machine type changes: 0x9c, the SMI features offered, the extended TSEG register."""
    r.q("outl 0xcf8 0x8000009c")
    for value in (0x00, 0x5A, 0xFF, 0x02, 0x01):
        r.q(f"outb 0xcfc 0x{value:x}")
        r.q("inb 0xcfc")
    r.q("outl 0xcf8 0x80000050")
    r.q("inw 0xcfc")
    r.q("outw 0xcfc 0xffff")
    r.q("inw 0xcfc")
    # etc/smi/supported-features, found through the fw_cfg directory
    dma(r, 0x19 << 16 | 0x08 | 0x02, 4 + 64 * 20, 0x10000)
    directory = bytes.fromhex(r.q("read 0x10000 1284").split()[1][2:])
    for i in range(int.from_bytes(directory[:4], "big")):
        entry = directory[4 + 64 * i : 4 + 64 * (i + 1)]
        if entry[8:].rstrip(b"\0") == b"etc/smi/supported-features":
            dma(r, int.from_bytes(entry[4:6], "big") << 16 | 0x08 | 0x02, 8, 0x12000)
            r.q("read 0x12000 8")
    r.qmp("query-hotpluggable-cpus")
    r.qmp("device_add", driver="qemu64-x86_64-cpu", id="c1", **{"socket-id": 0, "core-id": 1, "thread-id": 0})
    r.qmp("query-cpus-fast")


def cpu_model(r: Recorder) -> None:
    """-cpu Haswell: the CPU type QMP lists and wants, and names in refusals."""
    r.qmp("query-hotpluggable-cpus")
    r.qmp("device_add", driver="qemu64-x86_64-cpu", id="c1", **{"socket-id": 0, "core-id": 1, "thread-id": 0})
    r.qmp(
        "device_add", driver="Haswell-x86_64-cpu", id="c1", **{"socket-id": 0, "core-id": 1, "thread-id": 0}
    )
    r.qmp(
        "device_add",
        driver="Haswell-v4-x86_64-cpu",
        id="c2",
        **{"socket-id": 0, "core-id": 2, "thread-id": 0},
    )
    r.qmp("device_add", driver="Haswell", id="c2", **{"socket-id": 0, "core-id": 2, "thread-id": 0})
    negotiate(r, 0x3)
    r.qmp("device_del", id="c1")
    r.qmp("query-cpus-fast")


def machine_none(r: Recorder) -> None:
    """-machine none: no devices, no CPU (memory accesses crash QEMU and are left out)."""
    for line in (
        "endianness",
        "inb 0x510",
        "inw 0xcfc",
        "inl 0xcfc",
        "outb 0x80 0x1",
        "outl 0xcf8 0x80000000",
        "inl 0xcfc",
        "irq_intercept_in ioapic",
        "irq_intercept_in /machine/q35",
    ):
        r.q(line)
    r.qmp("query-hotpluggable-cpus")
    r.qmp("query-cpus-fast")
    r.qmp("device_add", driver="qemu64-x86_64-cpu", id="c1")
    r.qmp("device_add", driver="frob", id="c1")
    r.qmp("device_del", id="c1")
    r.qmp("query-status")
    r.qmp("system_reset")
    r.events()


SMP4 = ["-machine", "q35,smm=on", "-smp", "1,maxcpus=4"]
SESSIONS: dict[str, tuple[list[str], Callable[[Recorder], None]]] = {
    "smbase_window": (SMP4, smbase_window),
    "smram_tseg": (["-machine", "q35,smm=on", "-m", "256", "-smp", "1,maxcpus=4"], smram_tseg),
    "pci_identity": (SMP4, pci_identity),
    "fw_cfg": (["-machine", "q35,smm=on", "-m", "256", "-smp", "2,maxcpus=4"], fw_cfg),
    **{f"negotiate_{f:#x}": (SMP4, _negotiation(f)) for f in (0x0, 0x1, 0x3, 0x7, 0x5, 0x2, 0x8)},
    "cpu_hotplug": (["-machine", "q35,smm=on", "-smp", "2,maxcpus=4"], cpu_hotplug),
    "qmp_cpus": (["-machine", "q35,smm=on", "-smp", "2,maxcpus=4"], qmp_cpus),
    "qmp_topology": (
        ["-machine", "q35,smm=on", "-smp", "1,sockets=2,cores=1,threads=2,maxcpus=4"],
        qmp_topology,
    ),
    "sparse_topology": (
        ["-machine", "q35,smm=on", "-smp", "1,maxcpus=12,sockets=2,dies=2,cores=3"],
        sparse_topology,
    ),
    "qtest_formats": (SMP4, qtest_formats),
    "irq_lines": (SMP4, irq_lines),
    "qmp_wire": (SMP4, qmp_wire),
    "qmp_limits": (SMP4, qmp_limits),
    **{
        f"machine_{v.replace('.', '_')}": (["-machine", f"pc-q35-{v}", "-smp", "1,maxcpus=4"], machine_compat)
        for v in ("2.8", "2.9", "4.2", "5.0", "5.1", "5.2", "6.0", "6.2", "7.0", "7.1", "7.2")
    },
    "cpu_model": (["-machine", "q35", "-cpu", "Haswell", "-smp", "1,maxcpus=4"], cpu_model),
    "machine_none": (["-machine", "none"], machine_none),
}
RAW_QMP = {"qmp_wire", "qmp_limits"}  # sessions that speak QMP bytes themselves instead of through qemu.qmp


def run(name: str, kind: str) -> Transcript:
    args, fn = SESSIONS[name]
    t = Target(kind, args, raw_qmp=name in RAW_QMP)
    try:
        rec = Recorder(t)
        if name not in RAW_QMP:
            rec.note("greeting", t.greeting)
            rec.qmp("qmp_capabilities")
        fn(rec)
        return rec.out
    finally:
        t.close()
