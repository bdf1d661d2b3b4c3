"""The assembled platform: a board and the rooms of its hardware behind one small interface.

``Platform`` is what the drivers (world, simulator, checker, QEMU endpoint) and the tests hold:
a ``Board`` (the static description) whose methods hand the machine value to the room that
owns each operation — memory views (hw.views), port wiring (hw.machine), interrupt controller
(hw.apic), CPU core (hw.core), live migration (hw.migration).  It adds no behaviour of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.hw import apic, core, machine, migration, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log


@dataclass(frozen=True)
class Platform(Board):
    # -- power ---------------------------------------------------------------------------------
    def power_on(self) -> Machine:
        return machine.power_on(self)

    def system_reset(self, m: Machine) -> Machine:
        return machine.system_reset(self, m)

    def migrate(self, m: Machine, log: Log, actor: str = "mgmt") -> Machine:
        return migration.migrate(self, m, log, actor)

    # -- memory ---------------------------------------------------------------------------------
    def decode(self, m: Machine, addr: int, view: str) -> tuple[str, int]:
        return views.decode(self, m, addr, view)

    def mem_read(self, m: Machine, addr: int, size: int, view: str, log: Log | None = None) -> int:
        return views.read(self, m, addr, size, view, log)

    def mem_write(
        self, m: Machine, addr: int, size: int, value: int, view: str, writer: str, log: Log | None
    ) -> Machine:
        return views.write(self, m, addr, size, value, view, writer, log)

    def mem_fill(
        self, m: Machine, addr: int, size: int, byte: int, view: str, writer: str, log: Log | None
    ) -> Machine:
        return views.fill(self, m, addr, size, byte, view, writer, log)

    def mem_put(self, m: Machine, addr: int, obj: Obj, view: str, log: Log | None) -> Machine:
        return views.put(self, m, addr, obj, view, log)

    def mem_object(self, m: Machine, addr: int, view: str) -> Obj | None:
        return views.object_at(self, m, addr, view)

    def fetch(self, m: Machine, addr: int, view: str) -> tuple[Obj | None, str | None]:
        return views.fetch(self, m, addr, view)

    # -- ports ----------------------------------------------------------------------------------
    def io_read(
        self, m: Machine, port: int, size: int, src: int | None, actor: str, log: Log
    ) -> tuple[Machine, int]:
        return machine.io_read(self, m, port, size, src, actor, log)

    def io_write(
        self, m: Machine, port: int, size: int, value: int, src: int | None, actor: str, log: Log
    ) -> Machine:
        return machine.io_write(self, m, port, size, value, src, actor, log)

    # -- interrupts and CPUs ----------------------------------------------------------------------
    def send_ipi(self, m: Machine, src: int, dest: int, mode: int, vector: int, log: Log) -> Machine:
        return apic.send_ipi(self, m, src, dest, mode, vector, log)

    def deliver(self, m: Machine, slot: int, mode: int, vector: int, log: Log) -> Machine:
        return apic.deliver(self, m, slot, mode, vector, log)

    def cpu_enabled(self, m: Machine, slot: int) -> bool:
        return core.cpu_enabled(self, m, slot)

    def cpu_step(self, m: Machine, slot: int, log: Log) -> Machine | None:
        return core.cpu_step(self, m, slot, log)

    def remove_cpu(self, m: Machine, slot: int) -> Machine:
        return machine.remove_cpu(self, m, slot)
