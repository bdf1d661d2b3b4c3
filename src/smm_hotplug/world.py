"""The whole system as one state value, and every actor's moves as pure transitions.

``World`` is the machine plus how far the management script has got and what the adversaries
have left.  ``System`` is everything static: the platform (hardware + firmware image + OS
image), the management script and the adversaries.  ``System.moves`` lists every transition
any actor can take from a world — CPUs (running firmware, OS or planted code), management,
adversaries.  The simulator follows one of them at each step; the checker explores all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from smm_hotplug.designs.catalog import Design
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.image import RESET_PC, flash
from smm_hotplug.guest import kernel
from smm_hotplug.hw import lpc, management
from smm_hotplug.hw.config import PlatformConfig, Smp, Topology, platform_config
from smm_hotplug.hw.cpu import HALTED, NO_SIPI
from smm_hotplug.hw.platform import Platform
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log, NullLog
from smm_hotplug.hw.views import CPU
from smm_hotplug.invariants import check_state, eject_monitor

PLUG = "plug"
UNPLUG = "unplug"
REPLUG = "replug"
REMOVE_SPARES = "remove-spares"

# Where a settled OS keeps its CPUs: idle loops of the kernel and AP trampoline.
IDLE_LABELS = frozenset({"idle"})


class World(NamedTuple):
    m: Machine
    done: int = 0  # management actions performed
    budgets: tuple[int, ...] = ()  # what each adversary may still do
    unplugged: tuple[int, ...] = ()  # slots management asked to unplug, in order


class Actor(Protocol):
    """An adversary as the world sees it (adversaries.base.Actor): a party with a budget of
    actions, each a transition of the machine.  A timing adversary instead lists the operator
    waits it removes (``waits_removed``) and whether it adds a re-plug (``replug``)."""

    id: str
    budget: int

    def moves(self, system: System, w: World, mk: Callable[[], Log]) -> Iterator[tuple[Machine, Log]]: ...


# One step of a CPU: (machine, slot, log) -> the next machine, or None when it cannot move.
CpuStep = Callable[[Machine, int, Log], "Machine | None"]


class Move(NamedTuple):
    actor: str  # "cpu3", "mgmt", "adv:<id>"
    choice: int  # which of the actor's options: 0 for CPUs, the slot for management
    world: World
    log: Log


@dataclass(frozen=True)
class Scenario:
    """What the operator does: boot ``boot_cpus`` of ``max_cpus`` possible CPUs, laid out as
    ``topology`` (None: QEMU's default for ``-smp boot_cpus,maxcpus=max_cpus``, one socket of
    ``max_cpus`` cores), hot-add ``plug`` CPUs, then hot-remove ``unplug``."""

    boot_cpus: int = 2
    max_cpus: int = 4
    plug: int = 2
    unplug: int = 1
    topology: Topology | None = None

    @classmethod
    def from_smp(cls, smp: Smp, plug: int, unplug: int) -> Scenario:
        return cls(smp.cpus, smp.maxcpus, plug, unplug, smp.topology)

    @property
    def smp(self) -> str:
        """The scenario as QEMU's -smp option."""
        spec = f"cpus={self.boot_cpus},maxcpus={self.max_cpus}"
        return spec if self.topology is None else f"{spec},{self.topology.spec()}"

    def validate(self) -> None:
        for name in ("boot_cpus", "max_cpus", "plug", "unplug"):
            if getattr(self, name) < 0:
                raise UsageError(
                    f"--{name.replace('_', '-')} must not be negative (got {getattr(self, name)})"
                )
        if self.boot_cpus < 1:
            raise UsageError("--boot-cpus must be at least 1")
        if self.max_cpus < self.boot_cpus:
            raise UsageError(f"--max-cpus ({self.max_cpus}) is smaller than --boot-cpus ({self.boot_cpus})")
        free = self.max_cpus - self.boot_cpus
        if self.plug > free:
            raise UsageError(
                f"cannot plug {self.plug} CPUs: only {free} free slot(s) "
                f"(max {self.max_cpus}, {self.boot_cpus} at boot)"
            )
        removable = self.boot_cpus - 1 + self.plug
        if self.unplug > removable:
            raise UsageError(
                f"cannot remove {self.unplug} CPUs: only {removable} CPU(s) other than the boot "
                "CPU will be present"
            )


@dataclass(frozen=True)
class System:
    design: Design
    scenario: Scenario
    adversaries: tuple[Actor, ...] = ()
    # Management waits for the guest to settle between actions unless an adversary
    # (concurrent-plug, unplug-race) takes that freedom away.
    wait_before: frozenset[str] = frozenset({PLUG, UNPLUG, REPLUG})
    replug: bool = False
    plat: Platform = field(init=False)
    script: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        sc = self.scenario
        sc.validate()
        cfg: PlatformConfig = platform_config(
            sc.boot_cpus, sc.max_cpus, hw=self.design.hw, topology=sc.topology
        )
        plat = Platform(
            cfg=cfg,
            rom=flash(),
            reset_pc=RESET_PC,
            disk=kernel.DISK_IMAGE,
            software=self.design.fw,
            eject_monitor=eject_monitor,
        )
        script: list[str] = []
        if cfg.hw.all_cpus_at_boot and sc.max_cpus > sc.boot_cpus:
            script.append(REMOVE_SPARES)
        script += [PLUG] * sc.plug + [UNPLUG] * sc.unplug
        if self.replug and sc.unplug:
            script.append(REPLUG)
        object.__setattr__(self, "plat", plat)
        object.__setattr__(self, "script", tuple(script))

    @property
    def cfg(self) -> PlatformConfig:
        return self.plat.cfg

    def initial(self) -> World:
        return World(m=self.plat.power_on(), budgets=tuple(a.budget for a in self.adversaries))

    # -- predicates ------------------------------------------------------------------------
    def os_up(self, w: World) -> bool:
        """The guest has enabled ACPI (SCI_EN), so it reacts to hotplug events."""
        return bool(w.m.lpc.pm1_cnt & lpc.PM1_CNT_SCI_EN)

    def settled(self, w: World) -> bool:
        """The guest has finished with every event: all CPUs idle in the OS, nothing pending."""
        m = w.m
        hp = m.cpuhp
        if hp.insert | hp.remove | hp.fw_remove:
            return False
        if m.lpc.gpe0_sts & lpc.GPE0_CPU_HOTPLUG:
            return False
        for c in m.cpus:
            if not c.present:
                continue
            if (
                c.smm
                or c.smi
                or c.init
                or c.nmi
                or c.sipi != NO_SIPI
                or c.irq
                or c.mode != HALTED
                or c.pc is None
            ):
                return False
            if c.pc[1] not in IDLE_LABELS:
                return False
            _obj, writer = self.plat.fetch(m, c.pc[0], CPU)
            if writer != "os":
                return False
        return True

    def finished(self, w: World) -> bool:
        return w.done >= len(self.script) and self.settled(w)

    # -- management ----------------------------------------------------------------------------
    def mgmt_targets(self, w: World, kind: str) -> list[int]:
        """The slots the operator may pick for its next action, lowest first: device_add into any
        free slot, device_del of any present CPU but the boot CPU that it has not already asked
        to remove; a re-plug goes into the slot of the last CPU removed, once it is empty."""
        m = w.m
        if kind == PLUG:
            return [s for s, c in enumerate(m.cpus) if not c.present and s not in w.unplugged]
        if kind == UNPLUG:
            return [s for s, c in enumerate(m.cpus) if c.present and s != 0 and s not in w.unplugged]
        if kind == REPLUG:
            last = w.unplugged[-1] if w.unplugged else None
            return [last] if last is not None and not m.cpus[last].present else []
        return []

    def mgmt_moves(self, w: World, mk: Callable[[], Log]) -> Iterator[tuple[int, World, Log]]:
        """The operator's next action, one per choice of slot: (slot, world after, log)."""
        if w.done >= len(self.script):
            return
        kind = self.script[w.done]
        if kind == REMOVE_SPARES:
            if not self.os_up(w) and not self._firmware_done(w):
                return
            log = mk()
            m = w.m
            for s in range(self.scenario.boot_cpus, self.cfg.max_cpus):
                if m.cpus[s].present:
                    m = management.remove_now(self.plat, m, s, log)
            yield 0, w._replace(m=m, done=w.done + 1), log
            return
        if not self.os_up(w):
            return
        if kind in self.wait_before and not self.settled(w):
            return
        for slot in self.mgmt_targets(w, kind):
            log = mk()
            try:
                if kind in (PLUG, REPLUG):
                    m = management.plug(self.plat, w.m, slot, log)
                    yield slot, w._replace(m=m, done=w.done + 1), log
                else:
                    m = management.unplug_request(self.plat, w.m, slot, log)
                    yield slot, w._replace(m=m, done=w.done + 1, unplugged=(*w.unplugged, slot)), log
            except management.Refused as err:
                log.add("mgmt", "mgmt", f"{kind} of cpu{slot} refused: {err}")
                yield slot, w._replace(done=w.done + 1), log

    def _firmware_done(self, w: World) -> bool:
        bsp = w.m.cpus[0]
        return bsp.pc is not None and bsp.pc[0] == kernel.OS_ENTRY

    # -- all moves ---------------------------------------------------------------------------------
    def moves(
        self, w: World, record: bool = False, detail: bool = False, cpu_step: CpuStep | None = None
    ) -> Iterator[Move]:
        """Every transition from ``w``.  ``cpu_step`` stands in for ``Platform.cpu_step`` (a
        driver's memoised version of it, which must compute the same)."""
        plat = self.plat
        step = cpu_step or plat.cpu_step
        mk = (lambda: Log(record=True, detail=detail)) if record else NullLog
        for slot in range(len(w.m.cpus)):
            if not plat.cpu_enabled(w.m, slot):
                continue
            log = mk()
            m2 = step(w.m, slot, log)
            if m2 is None or (m2 == w.m and not log.violations):
                continue
            yield Move(f"cpu{slot}", 0, World(m2, w.done, w.budgets, w.unplugged), log)
        for slot, w2, log in self.mgmt_moves(w, mk):
            yield Move("mgmt", slot, w2, log)
        for i, adv in enumerate(self.adversaries):
            if w.budgets[i] <= 0:
                continue
            for choice, (m2, log) in enumerate(adv.moves(self, w, mk)):
                budgets = (*w.budgets[:i], w.budgets[i] - 1, *w.budgets[i + 1 :])
                yield Move(f"adv:{adv.id}", choice, World(m2, w.done, budgets, w.unplugged), log)

    def check(self, w: World, log: Log) -> None:
        check_state(self.plat, w.m, log)

    def replay_move(self, w: World, actor: str, choice: int, detail: bool = False) -> Move:
        """Re-run one recorded move with full logging (trace replay)."""
        for mv in self.moves(w, record=True, detail=detail):
            if mv.actor == actor and mv.choice == choice:
                self.check(mv.world, mv.log)
                return mv
        raise UsageError(f"trace step {actor}/{choice} is not possible from this state")


def make_system(design: Design, scenario: Scenario, adversaries: tuple[Actor, ...] = ()) -> System:
    """The system under a set of adversaries: acting ones become actors, timing ones take away
    the operator's patience (and may add a re-plug to the script)."""
    removed: set[str] = set()
    replug = False
    for adv in adversaries:
        removed |= set(getattr(adv, "waits_removed", ()))
        replug = replug or bool(getattr(adv, "replug", False))
    return System(
        design,
        scenario,
        adversaries=tuple(a for a in adversaries if a.budget > 0),
        wait_before=frozenset({PLUG, UNPLUG, REPLUG}) - removed,
        replug=replug,
    )
