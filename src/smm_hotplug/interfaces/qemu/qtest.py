"""QEMU's qtest line protocol (softmmu/qtest.c in QEMU 7.2) over a QemuMachine.

Answers are QEMU's: ``OK``, ``OK 0x%04x`` for port reads (whatever the width), ``OK 0x%016x``
for memory reads, ``FAIL …``.  Words are split on single spaces as QEMU splits them; numbers
are parsed with base 0 (decimal, 0x…, 0…), may carry a sign and wrap modulo 2^64.  The quirks of
``write`` (the hex string is not checked) and ``b64write`` (the decode buffer is written as is)
are reproduced.  Where QEMU asserts on a malformed line and aborts — an empty line, a missing or
non-numeric argument, a port above 0xffff, a zero-length ``read``, a memory access on
``-machine none`` — this endpoint answers ``FAIL`` and the session goes on.  Lines are bytes as
QEMU sees them (handled as Latin-1 text, so every byte comes back as it was sent), and the work
for a line is linear in its length.  IRQ level changes on intercepted IOAPIC pins are reported as
``IRQ raise N`` / ``IRQ lower N`` before the answer of the command that caused them.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
import time
from typing import IO

from smm_hotplug.hw.apic import SCI_IRQ
from smm_hotplug.interfaces.qemu.session import NoAddressSpace, NoMachine, QemuMachine

MASK64 = (1 << 64) - 1
IOAPIC_PINS = 24
# QOM paths that resolve to a device, and which of them is the IOAPIC (pins we drive).
IOAPIC_PATHS = {"ioapic", "/machine/q35/ioapic"}


def _known_device(path: str, qm: QemuMachine | NoMachine) -> str | None:
    """A canonical name for what object_resolve_path() would find, or None."""
    if isinstance(qm, NoMachine):
        return None
    if path in IOAPIC_PATHS:
        return "ioapic"
    if path in ("/machine/q35", "q35"):
        return "q35"
    if path in ("/machine/q35/mch", "mch"):
        return "mch"
    if path in ("/machine/q35/ich9-lpc", "ich9-lpc", "/machine/unattached/device[1]"):
        return "ich9-lpc"
    for slot in range(qm.cfg.boot_cpus):
        if path == f"/machine/unattached/device[{0 if slot == 0 else slot + 1}]":
            return f"cpu{slot}"
    return None


class QtestError(Exception):
    """A line QEMU would abort on; ``str()`` is the FAIL text."""


def _num(word: str | None, what: str) -> int:
    """qemu_strtou64(…, 0): base prefixes, optional sign, negatives wrap, no trailing junk."""
    if word is None:
        raise QtestError(f"missing {what}")
    text = word
    sign = 1
    if text[:1] in "+-" and text:
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    try:
        if text[:2].lower() == "0x":
            value = int(text[2:], 16) if text[2:] and "_" not in text else int("x")
        elif len(text) > 1 and text[0] == "0":
            value = int(text[1:], 8) if "_" not in text else int("x")
        else:
            value = int(text, 10) if text.isdigit() else int("x")
    except ValueError:
        raise QtestError(f"invalid {what} '{word}'") from None
    if value > MASK64:
        raise QtestError(f"{what} '{word}' out of range")
    return (-value) & MASK64 if sign < 0 else value


def _hex2nib(ch: str) -> int:
    if "0" <= ch <= "9":
        return ord(ch) - ord("0")
    if "a" <= ch <= "f":
        return ord(ch) - ord("a") + 10
    if "A" <= ch <= "F":
        return ord(ch) - ord("A") + 10
    return -1


_NOT_B64 = re.compile(r"[^A-Za-z0-9+/]")
# _hex2nib over a whole string at once: a high and a low nibble table, where a character that is
# not a hex digit gives -1, i.e. 0xf0 as a high nibble and 0xff (everything) as a low one.
_HEX = "0123456789abcdefABCDEF"
_HI = bytes((_hex2nib(chr(c)) << 4) & 0xFF if chr(c) in _HEX else 0xF0 for c in range(256))
_LO = bytes(_hex2nib(chr(c)) if chr(c) in _HEX else 0xFF for c in range(256))


def _glib_b64decode(text: str) -> bytes:
    """Lenient like g_base64_decode: skip characters outside the alphabet, stop at '='."""
    body = _NOT_B64.sub("", text.split("=", 1)[0])
    body = body[: len(body) - (len(body) % 4 == 1)]
    body += "=" * (-len(body) % 4)
    try:
        return base64.b64decode(body) if body else b""
    except (binascii.Error, ValueError):
        return b""


class QtestSession:
    def __init__(self, qm: QemuMachine | NoMachine, accel_qtest: bool = False) -> None:
        self.qm = qm
        self.accel_qtest = accel_qtest  # clock_* exist only with QEMU's qtest accelerator
        self.intercepted: str | None = None
        self.levels = [0] * IOAPIC_PINS  # last level reported per IOAPIC pin
        self.inputs = [0] * IOAPIC_PINS  # levels set with set_irq_in
        self.now = 0

    # -- IRQs ------------------------------------------------------------------------------------
    def _pin_level(self, pin: int) -> int:
        if pin == SCI_IRQ and self.qm.sci_level():
            return 1
        return self.inputs[pin]

    def poll_irqs(self) -> list[str]:
        """IRQ lines for pins whose level changed since the last report."""
        out = []
        for pin in range(IOAPIC_PINS):
            level = self._pin_level(pin)
            if level != self.levels[pin] and self.intercepted == "ioapic":
                out.append(f"IRQ {'raise' if level else 'lower'} {pin}")
            self.levels[pin] = level
        return out

    # -- commands ----------------------------------------------------------------------------------
    def handle(self, line: str) -> list[str]:
        """Answer one line; IRQ lines the command caused come first."""
        words = line.split(" ")
        try:
            answer = self._dispatch(words)
        except QtestError as err:
            answer = f"FAIL {err}"
        except NoAddressSpace as err:
            answer = f"FAIL {err}"
        return [*self.poll_irqs(), answer]

    def _dispatch(self, w: list[str]) -> str:
        cmd = w[0]

        def arg(i: int) -> str | None:
            return w[i] if i < len(w) else None

        qm = self.qm
        if cmd == "" and len(w) == 1:
            raise QtestError("empty command")
        if cmd in ("outb", "outw", "outl"):
            addr, value = _num(arg(1), "address"), _num(arg(2), "value")
            if addr > 0xFFFF:
                raise QtestError(f"port {arg(1)} above 0xffff")
            qm.io_write(addr, {"b": 1, "w": 2, "l": 4}[cmd[3]], value)
            return "OK"
        if cmd in ("inb", "inw", "inl"):
            addr = _num(arg(1), "address")
            if addr > 0xFFFF:
                raise QtestError(f"port {arg(1)} above 0xffff")
            return f"OK 0x{qm.io_read(addr, {'b': 1, 'w': 2, 'l': 4}[cmd[2]]):04x}"
        if cmd in ("writeb", "writew", "writel", "writeq"):
            addr, value = _num(arg(1), "address"), _num(arg(2), "value")
            size = {"b": 1, "w": 2, "l": 4, "q": 8}[cmd[5]]
            qm.write(addr, size, value & ((1 << (8 * size)) - 1))
            return "OK"
        if cmd in ("readb", "readw", "readl", "readq"):
            addr = _num(arg(1), "address")
            return f"OK 0x{qm.read(addr, {'b': 1, 'w': 2, 'l': 4, 'q': 8}[cmd[4]]):016x}"
        if cmd == "read":
            addr, size = _num(arg(1), "address"), _num(arg(2), "size")
            if size == 0:
                raise QtestError("read of zero bytes")
            return "OK 0x" + qm.read_bytes(addr, self._limit(size)).hex()
        if cmd == "b64read":
            addr, size = _num(arg(1), "address"), _num(arg(2), "size")
            return "OK " + base64.b64encode(qm.read_bytes(addr, self._limit(size))).decode()
        if cmd == "write":
            return self._write(arg(1), arg(2), arg(3))
        if cmd == "b64write":
            return self._b64write(arg(1), arg(2), arg(3))
        if cmd == "memset":
            addr, size, pattern = _num(arg(1), "address"), _num(arg(2), "size"), _num(arg(3), "value")
            if size:
                qm.memset(addr, self._limit(size), pattern & 0xFF)
            return "OK"
        if cmd == "endianness":
            return "OK little"
        if cmd in ("clock_step", "clock_set") and self.accel_qtest:
            if cmd == "clock_step":
                self.now += _num(arg(1), "nanoseconds") if arg(1) is not None else 0
            else:
                self.now = max(self.now, _num(arg(1), "nanoseconds"))
            return f"OK {self.now}"
        if cmd in ("irq_intercept_in", "irq_intercept_out"):
            path = arg(1)
            if path is None:
                raise QtestError("missing QOM path")
            dev = _known_device(path, qm)
            if dev is None:
                return "FAIL Unknown device"
            if self.intercepted is not None:
                return "OK" if self.intercepted == dev else "FAIL IRQ intercept already enabled"
            self.intercepted = dev
            if dev == "ioapic":
                self.levels = [self._pin_level(p) for p in range(IOAPIC_PINS)]
            return "OK"
        if cmd == "set_irq_in":
            path, name = arg(1), arg(2)
            if path is None or name is None or arg(3) is None or arg(4) is None:
                raise QtestError("set_irq_in needs QOM path, GPIO name, pin and level")
            pin, level = _num(arg(3), "pin"), _num(arg(4), "level")
            dev = _known_device(path, qm)
            if dev is None:
                return "FAIL Unknown device"
            if dev != "ioapic" or name != "unnamed-gpio-in" or pin >= IOAPIC_PINS:
                raise QtestError(f"no GPIO input {name}[{pin}] on {path}")
            level32 = level & 0xFFFFFFFF
            self.inputs[pin] = level32 - (1 << 32) if level32 & 0x80000000 else level32
            return "OK"
        return f"FAIL Unknown command '{cmd}'"

    def _write(self, a: str | None, s: str | None, data: str | None) -> str:
        addr, size = _num(a, "address"), _num(s, "size")
        if data is None:
            raise QtestError("missing data")
        if len(data) < 3:
            return "ERR invalid argument size"
        size = self._limit(size)
        # QEMU skips the first two characters, checked or not, and reads pairs while they last.
        pairs = min(size, max(0, (len(data) - 2) // 2))
        hexpart = data[2 : 2 + 2 * pairs].encode("latin-1", errors="replace")
        high = int.from_bytes(hexpart[0::2].translate(_HI), "big")
        low = int.from_bytes(hexpart[1::2].translate(_LO), "big")
        blob = (high | low).to_bytes(pairs, "big") + bytes(size - pairs)
        self.qm.write_bytes(addr, blob)
        return "OK"

    def _b64write(self, a: str | None, s: str | None, text: str | None) -> str:
        addr, size = _num(a, "address"), _num(s, "size")
        if text is None:
            raise QtestError("missing data")
        # g_base64_decode_inplace: the decoded bytes overwrite the start of the text buffer
        # (NUL-terminated); QEMU then writes LEN bytes of that buffer.
        raw = bytearray(text.encode("latin-1", errors="replace")) + b"\0"
        decoded = _glib_b64decode(text)
        raw[: len(decoded)] = decoded
        size = self._limit(size)
        self.qm.write_bytes(addr, bytes((raw + bytes(size))[:size]))
        return "OK"

    @staticmethod
    def _limit(size: int) -> int:
        if size > 1 << 24:
            raise QtestError(f"size {size} too large for this endpoint")
        return size


class QtestLog:
    """-qtest-log (softmmu/qtest.c): "[R +t] line" received, "[S +t] answer" sent, "[I t] OPENED"
    and "[I +t] CLOSED", t in seconds since the channel opened.  Default: standard error."""

    def __init__(self, target: str | None) -> None:
        self.file: IO[str] | None
        if target is None:
            self.file = sys.stderr
        elif target == "none":
            self.file = None
        else:
            self.file = open(target, "w+", encoding="latin-1")  # noqa: SIM115 - lives as long as the process
        self.start = time.monotonic()
        self.opened = False

    def _t(self) -> float:
        return time.monotonic() - self.start

    def _write(self, text: str) -> None:
        if self.file is not None:
            self.file.write(text)
            self.file.flush()

    def opened_now(self) -> None:
        self.start, self.opened = time.monotonic(), True
        self._write(f"[I {self._t():.6f}] OPENED\n")

    def closed_now(self) -> None:
        self.opened = False
        self._write(f"[I +{self._t():.6f}] CLOSED\n")

    def received(self, line: str) -> None:
        self._write(f"[R +{self._t():.6f}] {line}\n")

    def sent(self, answer: str) -> None:
        if self.opened:
            self._write(f"[S +{self._t():.6f}] {answer}\n")
