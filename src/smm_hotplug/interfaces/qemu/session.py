"""A machine driven from outside, the way QEMU's qtest accelerator drives one.

Under ``-accel qtest`` no CPU executes; a test harness reads and writes ports and memory
(always as non-SMM accesses) and manages CPUs over QMP.  ``QemuMachine`` keeps the current
state value and applies those accesses through the same Platform functions every other driver
uses; QMP events the model reports are queued for the protocol layers.
"""

from __future__ import annotations

from smm_hotplug.code import PROGRAMS
from smm_hotplug.firmware import seabios
from smm_hotplug.hw import lpc, management
from smm_hotplug.hw.config import PlatformConfig
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.platform import Platform
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Event, Log
from smm_hotplug.hw.views import CPU, ROM_BASE

CPU_STEP_LIMIT = 200_000  # a guest that never stops running is cut off here


class QemuMachine:
    """``firmware=True``: the CPUs run a SeaBIOS-like firmware at power-on and whenever an SMI
    or IPI gives them work, as Debian's QEMU does under -qtest; ``False``: nothing ever runs,
    as with QEMU's qtest accelerator."""

    def __init__(self, cfg: PlatformConfig, firmware: bool = False) -> None:
        rom = {ROM_BASE: Obj("code", "seabios.boot", PROGRAMS["seabios.boot"].size, "firmware")}
        self.plat = Platform(
            cfg=cfg, rom=rom if firmware else {}, reset_pc=(ROM_BASE, "entry") if firmware else None
        )
        self.firmware = firmware
        self.m: Machine = self.plat.power_on()
        self.events: list[Event] = []  # QMP events not yet delivered
        self.run_cpus()
        assert seabios  # the firmware image's programs are registered on import

    def run_cpus(self) -> int:
        """Let the CPUs run (round-robin) until none can move; returns the steps taken."""
        if not self.firmware:
            return 0
        steps = 0
        while steps < CPU_STEP_LIMIT:
            moved = False
            for slot in range(len(self.m.cpus)):
                if not self.plat.cpu_enabled(self.m, slot):
                    continue
                log = self._log()
                nxt = self.plat.cpu_step(self.m, slot, log)
                if nxt is None:
                    continue
                self.m = nxt
                self._collect(log)
                moved = True
                steps += 1
            if not moved:
                break
        return steps

    def sci_level(self) -> bool:
        return lpc.sci_level(self.m.lpc)

    @property
    def cfg(self) -> PlatformConfig:
        return self.plat.cfg

    def _log(self) -> Log:
        return Log(record=True, detail=False)

    def _collect(self, log: Log) -> None:
        self.events += [e for e in log.events if e.kind == "qmp"]

    # -- ports -----------------------------------------------------------------------------
    def io_read(self, port: int, size: int) -> int:
        log = self._log()
        self.m, value = self.plat.io_read(self.m, port & 0xFFFF, size, None, "qtest", log)
        self._collect(log)
        return value

    def io_write(self, port: int, size: int, value: int) -> None:
        log = self._log()
        self.m = self.plat.io_write(
            self.m, port & 0xFFFF, size, value & ((1 << (8 * size)) - 1), None, "qtest", log
        )
        self._collect(log)

    def inb(self, port: int) -> int:
        return self.io_read(port, 1)

    def inw(self, port: int) -> int:
        return self.io_read(port, 2)

    def inl(self, port: int) -> int:
        return self.io_read(port, 4)

    def outb(self, port: int, value: int) -> None:
        self.io_write(port, 1, value)

    def outw(self, port: int, value: int) -> None:
        self.io_write(port, 2, value)

    def outl(self, port: int, value: int) -> None:
        self.io_write(port, 4, value)

    # -- memory (non-SMM view) ------------------------------------------------------------------
    def read(self, addr: int, size: int) -> int:
        return self.plat.mem_read(self.m, addr, size, CPU)

    def write(self, addr: int, size: int, value: int) -> None:
        self.m = self.plat.mem_write(self.m, addr, size, value, CPU, "qtest", None)

    def read_bytes(self, addr: int, size: int) -> bytes:
        return self.read(addr, size).to_bytes(size, "little") if size else b""

    def write_bytes(self, addr: int, data: bytes) -> None:
        if data:
            self.write(addr, len(data), int.from_bytes(data, "little"))

    def memset(self, addr: int, size: int, byte: int) -> None:
        if size:
            self.m = self.plat.mem_fill(self.m, addr, size, byte, CPU, "qtest", None)

    # -- PCI config helpers --------------------------------------------------------------------
    def pci_read(self, dev: int, reg: int, size: int) -> int:
        self.outl(0xCF8, 0x80000000 | dev << 11 | (reg & 0xFC))
        return self.io_read(0xCFC + (reg & 3), size)

    def pci_write(self, dev: int, reg: int, size: int, value: int) -> None:
        self.outl(0xCF8, 0x80000000 | dev << 11 | (reg & 0xFC))
        self.io_write(0xCFC + (reg & 3), size, value)

    # -- management ------------------------------------------------------------------------------
    def plug(self, slot: int) -> None:
        """device_add; raises management.Refused with QEMU's message."""
        log = self._log()
        self.m = management.plug(self.plat, self.m, slot, log)
        self._collect(log)
        self.run_cpus()

    def system_reset(self) -> None:
        self.m = self.plat.system_reset(self.m)
        self.run_cpus()

    def unplug_request(self, slot: int) -> None:
        log = self._log()
        self.m = management.unplug_request(self.plat, self.m, slot, log)
        self._collect(log)

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out


class NoAddressSpace(Exception):
    """A memory access on a machine without CPUs."""


class NoMachine:
    """``-machine none``: no devices, no RAM, no CPU, so nothing of the model exists.

    Ports read all-ones and ignore writes (QEMU's unassigned I/O); qtest memory accesses have no
    CPU address space to go through (QEMU 7.2 crashes on them; the endpoint refuses them)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def io_read(self, port: int, size: int) -> int:
        return (1 << (8 * size)) - 1

    def io_write(self, port: int, size: int, value: int) -> None:
        return None

    def _memory(self, *_: object) -> None:
        raise NoAddressSpace("machine none has no CPU and no memory")

    read = read_bytes = write = write_bytes = memset = _memory

    def sci_level(self) -> bool:
        return False

    def system_reset(self) -> None:
        return None

    def take_events(self) -> list[Event]:
        out, self.events = self.events, []
        return out
