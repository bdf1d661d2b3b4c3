"""The adversaries the checker can schedule, by id (``smm-hotplug attacks``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from smm_hotplug.adversaries.base import (
    DMA_DEVICE,
    OS,
    TIMING,
    Action,
    Adversary,
    adv_put,
    adv_write,
    dma_read,
    dma_write,
    os_bus,
    os_cpu,
)
from smm_hotplug.adversaries.ipi import EarlyInitSipi, EarlySmi, InitInSmm, OsIpi
from smm_hotplug.adversaries.payload import OS_PAYLOAD_SMBASE
from smm_hotplug.code import PROGRAMS
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware import layout as FW
from smm_hotplug.hw import cpuhp, mch
from smm_hotplug.hw.cpu import SMI_HANDLER_OFFSET
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, DMA, RAM

PAYLOAD = "os.payload"
# Properties that assume the OS plays its part of the hotplug protocol.
PROTOCOL = frozenset(
    {"smbase-in-tseg", "save-state-exclusive", "eject-safe", "firmware-table-consistent", "hotplug-completes"}
)


def _payload(writer: str) -> Obj:
    return Obj("code", PAYLOAD, PROGRAMS[PAYLOAD].size, writer)


def _plant(system, m: Machine, addr: int, view: str, writer: str, log: Log) -> Machine:
    return adv_put(system, m, addr, _payload(writer), view, log)


# -- code and data planted in the default-SMBASE area -------------------------------------------
def _default_smbase_actions(view: str, writer: str) -> list[tuple[str, Action]]:
    via = "DMA" if view == DMA else "the OS"

    def plant_code(system, w, log):
        return _plant(system, w.m, FW.FIRST_SMI_HANDLER, view, writer, log)

    def redirect(system, w, log):
        plat = system.plat
        m = adv_write(system, w.m, FW.CTX_NEW_SMBASE, 4, OS_PAYLOAD_SMBASE, view, writer, log)
        if plat.mem_read(m, FW.CTX_NEW_SMBASE, 4, view) != OS_PAYLOAD_SMBASE:
            return None  # the write was blocked: the attack does not get started
        return _plant(system, m, OS_PAYLOAD_SMBASE + SMI_HANDLER_OFFSET, view, writer, log)

    return [
        (f"{via} writes its own code at 0x38000", plant_code),
        (
            f"{via} points the first-SMI context's NewSmbase at 0x{OS_PAYLOAD_SMBASE:x}, over its code",
            redirect,
        ),
    ]


@dataclass(frozen=True)
class CodeAtDefaultSmbase(Adversary):
    def actions(self, system, w):
        view = CPU if self.kind == OS else DMA
        if _blocked(system, w.m, FW.WINDOW_BASE, view) and _blocked(system, w.m, FW.FIRST_SMI_HANDLER, view):
            return []  # the whole area is SMRAM (or guarded) for this party: nothing to write
        return _default_smbase_actions(view, "os" if self.kind == OS else "dma")


def _blocked(system, m: Machine, addr: int, view: str) -> bool:
    return system.plat.decode(m, addr, view)[0] != RAM


@dataclass(frozen=True)
class SmbaseMsrWrite(Adversary):
    def actions(self, system, w):
        slot = os_cpu(system, w.m)
        if slot is None or not system.cfg.hw.smbase_msr_writable:
            return []  # WRMSR to SMBASE outside SMM raises #GP: nothing happens

        def act(system, w, log, slot=slot):
            m = _plant(system, w.m, OS_PAYLOAD_SMBASE + SMI_HANDLER_OFFSET, CPU, "os", log)
            bus = os_bus(system, m, log)
            if not bus.wrmsr_smbase(OS_PAYLOAD_SMBASE):
                return None
            return set_cpu(bus.m, slot, bus.m.cpus[slot]._replace(smbase=OS_PAYLOAD_SMBASE))

        return [(f"the OS writes cpu{slot}'s SMBASE MSR: 0x{OS_PAYLOAD_SMBASE:x}, over its own code", act)]


# -- hotplug controller ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HotplugRegisterTamper(Adversary):
    def actions(self, system, w):
        out: list[tuple[str, Action]] = []
        base = cpuhp.BASE
        names = {
            cpuhp.F_INSERT: "clears the insert event of",
            cpuhp.F_REMOVE: "clears the remove event of",
            cpuhp.F_EJECT: "ejects",
            cpuhp.F_FW_REMOVE: "sets fw-remove on",
        }
        for slot in range(system.cfg.max_cpus):

            def select(system, w, log, slot=slot):
                bus = os_bus(system, w.m, log)
                bus.out(base + cpuhp.SELECTOR, 4, slot)
                return bus.m

            out.append((f"the OS moves the hotplug selector to {slot}", select))
            present = w.m.cpus[slot].present
            flags = cpuhp.flags(w.m.cpuhp, slot, present) if w.m.cpuhp.modern else 0
            for bit, what in names.items():
                # Pokes QEMU ignores (nothing to clear, empty slot, boot CPU) only move the
                # selector, which the select action above already covers.
                if bit in (cpuhp.F_INSERT, cpuhp.F_REMOVE) and not flags & bit:
                    continue
                if bit in (cpuhp.F_EJECT, cpuhp.F_FW_REMOVE) and (slot == 0 or not present):
                    continue

                def poke(system, w, log, slot=slot, bit=bit):
                    bus = os_bus(system, w.m, log)
                    bus.out(base + cpuhp.SELECTOR, 4, slot)
                    bus.out(base + cpuhp.FLAGS, 1, bit)
                    return bus.m

                out.append((f"the OS {what} cpu{slot} through the hotplug block", poke))
            if system.cfg.hw.hotplug_smbase_regs:

                def smbase_reg(system, w, log, slot=slot):
                    bus = os_bus(system, w.m, log)
                    bus.out(base + cpuhp.SELECTOR, 4, slot)
                    bus.out(base + cpuhp.SMBASE_REG, 4, OS_PAYLOAD_SMBASE)
                    return bus.m

                out.append((f"the OS writes slot {slot}'s SMBASE register", smbase_reg))
        return out


@dataclass(frozen=True)
class SmramReconfig(Adversary):
    """Not in the 2019 list: the OS reprograms the MCH to reach TSEG (what D_LCK prevents)."""

    def actions(self, system, w):
        lay = FW.smram_layout(system.cfg)
        if mch.smram_locked(w.m.mch) and _blocked(system, w.m, lay.tile_entry(0), CPU):
            return []  # D_LCK: SMRAM control is frozen and TSEG is out of reach

        def mch_write(reg, value):
            def act(system, w, log):
                bus = os_bus(system, w.m, log)
                bus.pci_write(mch.DEVFN, reg, 1, value)
                return bus.m if bus.m.mch != w.m.mch else None  # D_LCK refused it

            return act

        def plant(system, w, log):
            return _plant(system, w.m, lay.tile_entry(0), CPU, "os", log)

        return [
            ("the OS clears ESMRAMC.T_EN to turn TSEG into ordinary RAM", mch_write(mch.ESMRAMC, 0x00)),
            ("the OS clears SMRAM.G_SMRAME", mch_write(mch.SMRAM, mch.SMRAM_C_BASE_SEG)),
            ("the OS writes its code over the BSP's SMI entry in TSEG", plant),
        ]


# -- DMA into TSEG -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DmaTseg(Adversary):
    def actions(self, system, w):
        lay = FW.smram_layout(system.cfg)
        if _blocked(system, w.m, lay.tseg_base, DMA) and _blocked(system, w.m, lay.tile_entry(0), DMA):
            return []

        def plant(system, w, log):
            return _plant(system, w.m, lay.tile_entry(0), DMA, "dma", log)

        def table(system, w, log):
            return dma_write(system, w.m, lay.apic_id_slot(1), 8, 0, log)

        def peek(system, w, log):
            dma_read(system, w.m, lay.tseg_base, 8, log)
            return w.m

        return [
            ("a device DMAs code over the BSP's SMI entry in TSEG", plant),
            ("a device DMAs into the firmware's CPU table in TSEG", table),
            ("a device reads TSEG by DMA", peek),
        ]


# -- timing ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing(Adversary):
    waits_removed: frozenset[str] = frozenset()
    replug: bool = False


@dataclass(frozen=True)
class Migration(Adversary):
    """The operator live-migrates the VM at any moment, as QEMU 7.2 does it (hw.migration)."""

    def can_act(self, system, w):
        return True

    def actions(self, system, w):
        def migrate(system, w, log):
            return system.plat.migrate(w.m, log, f"adv:{self.id}")

        return [("the operator live-migrates the VM to another host (QEMU 7.2)", migrate)]


def _catalog() -> dict[str, Adversary]:
    advs: list[Adversary] = [
        CodeAtDefaultSmbase(
            "os-code-at-default-smbase",
            "the OS writes code or first-SMI context data in 0x30000-0x4FFFF",
            OS,
            waives=PROTOCOL,
        ),
        CodeAtDefaultSmbase(
            "dma-code-at-default-smbase",
            "a DMA device writes code or first-SMI context data in 0x30000-0x4FFFF",
            DMA_DEVICE,
        ),
        EarlySmi("os-early-smi", "the OS sends an SMI IPI to any CPU at any time", OS, waives=PROTOCOL),
        EarlyInitSipi(
            "os-early-init-sipi",
            "the OS starts a hot-added CPU before the firmware relocated it",
            OS,
            waives=PROTOCOL,
        ),
        SmbaseMsrWrite(
            "os-smbase-msr-write", "the OS writes the SMBASE MSR of a CPU it runs", OS, waives=PROTOCOL
        ),
        HotplugRegisterTamper(
            "os-hotplug-register-tamper",
            "the OS writes anything to the CPU hotplug block, SMBASE registers included",
            OS,
            waives=PROTOCOL,
        ),
        SmramReconfig(
            "os-smram-reconfig",
            "the OS reprograms SMRAM control (ESMRAMC, SMRAM) to reach TSEG",
            OS,
            budget=2,
            waives=PROTOCOL,
        ),
        DmaTseg("dma-tseg", "a DMA device reads or writes TSEG", DMA_DEVICE),
        Timing(
            "concurrent-plug",
            "several CPUs plugged at once, also while an SMI is being handled",
            TIMING,
            budget=0,
            waits_removed=frozenset({"plug", "replug"}),
        ),
        Timing(
            "unplug-race",
            "unplug requests at any time, also during a relocation",
            TIMING,
            budget=0,
            waits_removed=frozenset({"unplug"}),
        ),
        Timing(
            "replug-same-slot",
            "a removed CPU's slot is plugged again as soon as it is empty, its old events maybe pending",
            TIMING,
            budget=0,
            waits_removed=frozenset({"replug"}),
            replug=True,
        ),
        InitInSmm(
            "os-init-in-smm",
            "INIT IPIs to CPUs in SMM that the OS does not run (harmless where INIT is held until RSM)",
            OS,
            waives=frozenset({"hotplug-completes"}),
        ),
        Migration(
            "migration", "the operator live-migrates the VM at any moment (QEMU 7.2)", TIMING, in_all=False
        ),
        OsIpi(
            "os-ipi",
            "the OS sends INIT, SIPI (to its own code or firmware code), SMI and NMI IPIs to any CPU "
            "or all but itself, in any order, at any time",
            OS,
            budget=3,
            waives=PROTOCOL,
        ),
    ]
    return {a.id: a for a in advs}


ADVERSARIES: dict[str, Adversary] = _catalog()
ALL = "all"


def resolve(ids: list[str] | tuple[str, ...], budgets: dict[str, int] | None = None) -> tuple[Adversary, ...]:
    """The adversaries named (``all``: every one), with ``budgets`` overriding their budgets."""
    out: list[Adversary] = []
    for aid in ids:
        if aid == ALL:
            for a in ADVERSARIES.values():
                if a.in_all and a not in out:
                    out.append(a)
            continue
        if aid not in ADVERSARIES:
            raise UsageError(f"unknown attack '{aid}' (known: {', '.join(ADVERSARIES)}, {ALL})")
        if ADVERSARIES[aid] not in out:
            out.append(ADVERSARIES[aid])
    budgets = budgets or {}
    check_budgets(budgets)
    for aid in budgets:
        if ADVERSARIES[aid] not in out:
            raise UsageError(f"--budget {aid}={budgets[aid]}: {aid} is not among the attacks of this run")
    return tuple(replace(a, budget=budgets[a.id]) if a.id in budgets else a for a in out)


def check_budgets(budgets: dict[str, int]) -> None:
    """Budgets name known adversaries that act, and are at least 1."""
    for aid, n in budgets.items():
        adv = ADVERSARIES.get(aid)
        if adv is None:
            raise UsageError(f"--budget {aid}={n}: unknown attack '{aid}' (known: {', '.join(ADVERSARIES)})")
        if adv.kind == TIMING:
            raise UsageError(
                f"--budget {aid}={n}: {aid} does not act (it takes away the operator's patience)"
            )
        if n < 1:
            raise UsageError(
                f"--budget {aid}={n}: a budget must be at least 1 (leave the attack out instead)"
            )


def parse_budget(spec: str) -> tuple[str, int]:
    """``ID=N`` from the command line."""
    aid, sep, count = spec.partition("=")
    if not sep or not aid or not count.strip().lstrip("-").isdigit():
        raise UsageError(f"--budget {spec}: expected ID=N, e.g. os-ipi=2")
    return aid, int(count)
