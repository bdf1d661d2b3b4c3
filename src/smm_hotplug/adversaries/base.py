"""What an adversary is: an actor with a bounded budget of actions the checker may schedule at
any point where that party could act.

* OS adversaries act from a CPU that is running the OS (outside SMM) — the OS cannot act while
  all of its CPUs are held in SMM, which is what broadcast SMIs buy.
* DMA adversaries act through the DMA view once the OS has enabled bus mastering (the OS is up).
* Timing adversaries are the operator: they take away its patience (plug or unplug without
  waiting for the guest to settle, re-plug a freed slot at once) or, ``migration``, let it
  live-migrate the VM at any moment.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from smm_hotplug.hw.bus import Bus
from smm_hotplug.hw.cpu import HALTED, RUNNING
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, DMA
from smm_hotplug.world import System, World

OS = "os"
DMA_DEVICE = "dma"
TIMING = "timing"

# An action: given the system, world and a fresh log, return the new machine (or None).
Action = Callable[[System, World, Log], Machine | None]


@dataclass(frozen=True)
class Adversary:
    id: str
    summary: str
    kind: str  # OS | DMA_DEVICE | TIMING
    budget: int = 1
    # Properties not judged against this adversary because it can always break them by denying
    # service: an OS that may deviate from the hotplug protocol at will waives every protocol
    # property (OVMF: "at worst the OS fools the monarch into waiting forever"); one that may
    # INIT CPUs can keep any plug from completing.
    waives: frozenset[str] = frozenset()
    # Part of `all`, every adversary at once (see the README for why `migration` is not).
    in_all: bool = True

    def actions(self, system: System, w: World) -> list[tuple[str, Action]]:
        """(description, action) pairs available in ``w``; overridden by concrete adversaries."""
        return []

    def moves(self, system: System, w: World, mk: Callable[[], Log]) -> Iterator[tuple[Machine, Log]]:
        if not self.can_act(system, w):
            return
        for desc, act in self.actions(system, w):
            if act is None:
                continue
            log = mk()
            log.add("adv", f"adv:{self.id}", desc)
            m2 = act(system, w, log)
            if m2 is None or (m2 == w.m and not log.violations):
                continue  # no effect: not worth a state
            yield m2, log

    def can_act(self, system: System, w: World) -> bool:
        if self.kind == OS:
            return os_cpu(system, w.m) is not None
        if self.kind == DMA_DEVICE:
            return system.os_up(w)
        return False


# (system, cpus, mem, mch, answer) of the previous os_cpus() call: what the answer depends on.
_last: list = [None, None, None, None, None]


def os_cpus(system: System, m: Machine) -> tuple[int, ...]:
    """The CPUs the OS is running on (outside SMM, in OS code, able to run)."""
    if _last[0] is system and _last[1] is m.cpus and _last[2] is m.mem and _last[3] is m.mch:
        return _last[4]
    slots = _find_os_cpus(system, m)
    _last[:] = [system, m.cpus, m.mem, m.mch, slots]
    return slots


def os_cpu(system: System, m: Machine) -> int | None:
    """A CPU the OS is running on, if any (the first)."""
    slots = os_cpus(system, m)
    return slots[0] if slots else None


def _find_os_cpus(system: System, m: Machine) -> tuple[int, ...]:
    plat = system.plat
    out = []
    for slot, c in enumerate(m.cpus):
        if not c.present or c.smm or c.pc is None:
            continue
        if not (c.mode == RUNNING or (c.mode == HALTED and c.intr)):
            continue
        _, writer = plat.fetch(m, c.pc[0], CPU)
        if writer == "os":
            out.append(slot)
    return tuple(out)


def os_bus(system: System, m: Machine, log: Log, slot: int | None = None) -> Bus:
    """The accesses of code the OS runs on one of its CPUs (provenance "os"): ``slot``, or the
    first CPU it runs."""
    if slot is None:
        slot = os_cpu(system, m)
    assert slot is not None
    return Bus(system.plat, m, slot, log, "os", "os.adversary")


def adv_write(
    system: System, m: Machine, addr: int, size: int, value: int, view: str, writer: str, log: Log
) -> Machine:
    """A data write by the OS (CPU view) or a DMA device, logged like a program's access."""
    log.add("mem", writer, f"write{8 * size} [0x{addr:x}] <- 0x{value:x}", True, ("write", addr, writer))
    return system.plat.mem_write(m, addr, size, value, view, writer, log)


def adv_put(system: System, m: Machine, addr: int, obj: Obj, view: str, log: Log) -> Machine:
    """Code (or another object) stored by the OS or a DMA device, logged like ``Bus.install``."""
    log.add("mem", obj.writer, f"writes {obj.value} at 0x{addr:x}", True, ("write", addr, obj.writer))
    return system.plat.mem_put(m, addr, obj, view, log)


def dma_write(system: System, m: Machine, addr: int, size: int, value: int, log: Log) -> Machine:
    return adv_write(system, m, addr, size, value, DMA, "dma", log)


def dma_read(system: System, m: Machine, addr: int, size: int, log: Log) -> int:
    return system.plat.mem_read(m, addr, size, DMA, log)
