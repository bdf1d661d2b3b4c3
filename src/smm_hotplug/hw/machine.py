"""The q35 machine as wiring: which device answers where, and how their effects are applied.

Devices own their registers (hw.mch, hw.lpc, hw.fw_cfg, hw.cpuhp, hw.smbase_regs, hw.pci_host);
this module only connects them, the way QEMU's hw/i386/pc_q35.c and hw/isa/lpc_ich9.c map
regions: ``io_wires`` is the I/O port map, ``PCI_FUNCTIONS`` the functions behind the host
bridge.  A port access is cut into the pieces QEMU's memory core would (hw.iospace), each piece
goes to the device's handler with the device's state and its links (what it may see of the
rest of the machine), and the effects it returns are applied here in order — SMIs through the
interrupt controller, ejections, fw_cfg DMA through the DMA view of memory (hw.views), the SMI
feature files' callbacks into the LPC, PCI configuration writes.  Power-on and system reset
put every device in its reset state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from smm_hotplug.hw import apic, cpuhp, fw_cfg, lpc, mch, pci_host, smbase_regs, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import Cpu, power_on_cpu
from smm_hotplug.hw.effects import (
    ConfigWrite,
    Effects,
    Eject,
    FileSelected,
    FileWritten,
    FirmwareRemove,
    Note,
    RaiseSmi,
    StartDma,
)
from smm_hotplug.hw.iospace import IoSpace, Ops, Region
from smm_hotplug.hw.memory import Memory
from smm_hotplug.hw.state import Machine, present_mask, set_cpu
from smm_hotplug.hw.trace import Log


@dataclass
class Access:
    """Working context of one access: the machine being updated, who is accessing, the log."""

    m: Machine
    src: int | None  # CPU slot, or None for qtest/DMA/management
    actor: str
    log: Log
    smm: bool = False  # the access comes from a CPU in SMM


# -- what each device may see of the rest of the machine -------------------------------------
LinkFn = Callable[[Board, Access], Any]


def _no_links(board: Board, acc: Access) -> None:
    return None


def _fwcfg_links(board: Board, acc: Access) -> fw_cfg.Links:
    return fw_cfg.Links(board.cfg, lpc.smi_files(acc.m.lpc, board.cfg))


def _cpuhp_links(board: Board, acc: Access) -> cpuhp.Links:
    return cpuhp.Links(board.cfg, present_mask(acc.m))


def _smbase_reg_links(board: Board, acc: Access) -> smbase_regs.Links:
    return smbase_regs.Links(board.cfg.max_cpus, acc.smm)


def _pci_links(board: Board, acc: Access) -> pci_host.Links:
    m = acc.m

    def config_byte(devfn: pci_host.DevFn, reg: int) -> int | None:
        fn = PCI_FUNCTIONS.get(devfn)
        return None if fn is None else fn.read_byte(m[fn.index], reg)

    return pci_host.Links(config_byte)


# -- the maps ------------------------------------------------------------------------------------
class Wire(NamedTuple):
    """A device's register block mapped at ``port``; its state is ``Machine.<field>``."""

    port: int
    ops: Ops
    field: str
    links: LinkFn


FIXED_WIRES: tuple[Wire, ...] = (
    Wire(pci_host.CONFIG_ADDRESS, pci_host.ADDRESS_OPS, "pci_addr", _no_links),
    Wire(pci_host.CONFIG_DATA, pci_host.DATA_OPS, "pci_addr", _pci_links),
    Wire(lpc.APM_CNT, lpc.APM_OPS, "lpc", _no_links),
    Wire(fw_cfg.PORT_SELECTOR, fw_cfg.PORT_OPS, "fwcfg", _fwcfg_links),
    Wire(fw_cfg.PORT_DMA, fw_cfg.DMA_OPS, "fwcfg", _fwcfg_links),
)


def io_wires(board: Board, pm_base: int | None, modern: bool) -> tuple[Wire, ...]:
    """The I/O port map.  Two parts move with device state: the hotplug block is the legacy
    bitmap until the guest switches it to the modern interface (acpi_switch_to_modern_cphp),
    and the PM I/O block decodes at PMBASE once ACPI decoding is on."""
    wires = list(FIXED_WIRES)
    if modern:
        wires.append(Wire(cpuhp.BASE, cpuhp.MODERN_OPS, "cpuhp", _cpuhp_links))
        if board.cfg.hw.hotplug_smbase_regs:
            wires.append(Wire(cpuhp.BASE + smbase_regs.OFFSET, smbase_regs.OPS, "cpuhp", _smbase_reg_links))
    else:
        wires.append(Wire(cpuhp.BASE, cpuhp.LEGACY_OPS, "cpuhp", _cpuhp_links))
    if pm_base is not None:
        wires += [Wire(pm_base + offset, ops, "lpc", _no_links) for offset, ops in lpc.PM_REGIONS]
    return tuple(wires)


class PciFunction(NamedTuple):
    index: int  # of its state in Machine
    read_byte: Callable[[Any, int], int]
    write: Callable[[Any, Any, int, int, int], tuple[Any, Effects]]


PCI_FUNCTIONS: dict[pci_host.DevFn, PciFunction] = {
    mch.DEVFN: PciFunction(Machine._fields.index("mch"), mch.config_read_byte, mch.config_write),
    lpc.DEVFN: PciFunction(Machine._fields.index("lpc"), lpc.config_read_byte, lpc.config_write),
}


# -- dispatch ------------------------------------------------------------------------------------
def _with(m: Machine, index: int, state: Any) -> Machine:
    return Machine._make((*m[:index], state, *m[index + 1 :]))


def _region(board: Board, wire: Wire) -> Region:
    """The dispatcher's view of a wire: the device's handler on its state, then its effects."""
    index = Machine._fields.index(wire.field)
    ops, links = wire.ops, wire.links

    def read(acc: Access, offset: int, size: int) -> tuple[Access, int]:
        state = acc.m[index]
        new, value, effects = ops.read(state, links(board, acc), offset, size)
        if new is not state:
            acc.m = _with(acc.m, index, new)
        if effects:
            apply(board, acc, effects)
        return acc, value

    def write(acc: Access, offset: int, size: int, value: int) -> Access:
        state = acc.m[index]
        new, effects = ops.write(state, links(board, acc), offset, size, value)
        if new is not state:
            acc.m = _with(acc.m, index, new)
        if effects:
            apply(board, acc, effects)
        return acc

    return Region(wire.port, ops, read, write)


def io_space(board: Board, m: Machine) -> IoSpace:
    key = (lpc.pm_io_base(m.lpc), m.cpuhp.modern)
    cache = board.memo_io
    space = cache.get(key)
    if space is None:
        space = cache[key] = IoSpace([_region(board, w) for w in io_wires(board, *key)])
    return space


def io_read(
    board: Board, m: Machine, port: int, size: int, src: int | None, actor: str, log: Log
) -> tuple[Machine, int]:
    acc = Access(m, src, actor, log, smm=src is not None and m.cpus[src].smm)
    acc, value = io_space(board, m).read(acc, port, size)
    if log.record:
        log.add("io", actor, f"in{_sfx(size)} 0x{port:04x} -> 0x{value:0{2 * size}x}", detail=True)
    return acc.m, value


def io_write(
    board: Board, m: Machine, port: int, size: int, value: int, src: int | None, actor: str, log: Log
) -> Machine:
    if log.record:
        log.add("io", actor, f"out{_sfx(size)} 0x{port:04x} <- 0x{value:0{2 * size}x}", detail=True)
    acc = Access(m, src, actor, log, smm=src is not None and m.cpus[src].smm)
    return io_space(board, m).write(acc, port, size, value).m


# -- effects -------------------------------------------------------------------------------------
def apply(board: Board, acc: Access, effects: Effects) -> None:
    """Carry out what a device asked for, in order."""
    for e in effects:
        if isinstance(e, Note):
            acc.log.add(e.kind, acc.actor, e.text, detail=e.detail, data=e.data)
        elif isinstance(e, RaiseSmi):
            _raise_smi(board, acc, e.broadcast)
        elif isinstance(e, Eject):
            # The OS asked for the removal: its _EJ0 set fw_remove earlier, or it writes the
            # eject itself (an access from outside SMM).
            asked = bool(acc.m.removal_asked >> e.slot & 1) or not acc.smm
            acc.m = eject(board, acc.m, e.slot, acc.log, acc.actor, asked)
            acc.m = acc.m._replace(removal_asked=acc.m.removal_asked & ~(1 << e.slot))
        elif isinstance(e, FirmwareRemove):
            if not acc.smm:  # ghost: the OS (not the firmware) asked for this CPU's removal
                acc.m = acc.m._replace(removal_asked=acc.m.removal_asked | 1 << e.slot)
        elif isinstance(e, StartDma):
            fc = fw_cfg.dma_transfer(acc.m.fwcfg, e.desc_addr, _DmaHost(board, acc))
            acc.m = acc.m._replace(fwcfg=fc)
        elif isinstance(e, FileSelected):
            # The SMI feature files are the LPC's (ich9_lpc_realize registers their callbacks).
            new, notes = lpc.file_selected(acc.m.lpc, board.cfg, e.name)
            acc.m = acc.m._replace(lpc=new)
            apply(board, acc, notes)
        elif isinstance(e, FileWritten):
            new, notes = lpc.file_written(acc.m.lpc, e.name, e.offset, e.data)
            acc.m = acc.m._replace(lpc=new)
            apply(board, acc, notes)
        elif isinstance(e, ConfigWrite):
            fn = PCI_FUNCTIONS.get(e.devfn)
            if fn is not None:
                new, notes = fn.write(acc.m[fn.index], board.cfg, e.reg, e.size, e.value)
                acc.m = _with(acc.m, fn.index, new)
                apply(board, acc, notes)


def _raise_smi(board: Board, acc: Access, broadcast: bool) -> None:
    """The chipset's SMI (ich9_apm_ctrl_changed): every CPU, or the one that wrote APM_CNT."""
    if broadcast:
        acc.log.cross = True
        acc.log.add("hw", acc.actor, "APM: broadcast SMI to every CPU")
        for slot, c in enumerate(acc.m.cpus):
            if c.present:
                acc.m = apic.raise_smi(board, acc.m, slot, acc.log)
    elif acc.src is not None:
        acc.log.add("hw", acc.actor, f"APM: SMI to cpu{acc.src}")
        acc.m = apic.raise_smi(board, acc.m, acc.src, acc.log)


class _DmaHost:
    """fw_cfg's DMA engine sees guest memory through the DMA view (bytes it writes are
    "fw_cfg"'s), and the SMI feature files as the LPC holds them at each moment."""

    def __init__(self, board: Board, acc: Access) -> None:
        self.board = board
        self.acc = acc

    def read(self, addr: int, size: int) -> int:
        return views.read(self.board, self.acc.m, addr, size, views.DMA, self.acc.log)

    def write(self, addr: int, size: int, value: int) -> None:
        acc = self.acc
        acc.m = views.write(self.board, acc.m, addr, size, value, views.DMA, "fw_cfg", acc.log)

    def fill(self, addr: int, size: int, byte: int) -> None:
        acc = self.acc
        acc.m = views.fill(self.board, acc.m, addr, size, byte, views.DMA, "fw_cfg", acc.log)

    def links(self) -> fw_cfg.Links:
        return _fwcfg_links(self.board, self.acc)

    def apply(self, effects: Effects) -> None:
        apply(self.board, self.acc, effects)


# -- CPUs leaving --------------------------------------------------------------------------------
def eject(board: Board, m: Machine, slot: int, log: Log, actor: str, requested: bool = True) -> Machine:
    """Eject: QEMU unplugs and destroys the CPU at once; DEVICE_DELETED follows.  ``requested``
    (for the monitor): the OS had asked for this CPU's removal."""
    log.cross = True
    if board.eject_monitor is not None:
        board.eject_monitor(board, m, slot, log, requested)
    m = remove_cpu(board, m, slot)
    log.add("hw", actor, f"cpu{slot} (APIC ID {board.cfg.apic_id(slot)}) ejected")
    log.add("qmp", actor, f"DEVICE_DELETED cpu{slot}", data=("DEVICE_DELETED", slot))
    return m


def remove_cpu(board: Board, m: Machine, slot: int) -> Machine:
    """The CPU object goes away; a VMM that keeps SMBASE remembers the slot's value."""
    cfg = board.cfg
    if cfg.hw.vmm_keeps_smbase:
        kept = list(m.kept_smbase or (0,) * cfg.max_cpus)
        kept[slot] = m.cpus[slot].smbase
        m = m._replace(kept_smbase=tuple(kept))
    return set_cpu(m, slot, Cpu())


# -- power -----------------------------------------------------------------------------------------
def power_on(board: Board) -> Machine:
    cfg = board.cfg
    present = cfg.max_cpus if cfg.hw.all_cpus_at_boot else cfg.boot_cpus
    uninit = apic.fresh_ap_uninit(board)
    cpus = tuple(
        power_on_cpu(slot == 0, board.reset_pc, uninit) if slot < present else Cpu()
        for slot in range(cfg.max_cpus)
    )
    return Machine(
        cpus=cpus,
        mch=mch.reset(cfg),
        lpc=lpc.reset(),
        fwcfg=fw_cfg.reset(),
        cpuhp=cpuhp.initial(cfg.max_cpus, cfg.hw.hotplug_smbase_regs),
        pci_addr=0,
        mem=Memory(),
    )


def system_reset(board: Board, m: Machine) -> Machine:
    """qemu_system_reset: every present CPU is RESET (SMBASE back to 0x30000), the chipset
    and fw_cfg return to their reset state; RAM and the CPU hotplug block are kept."""
    uninit = apic.fresh_ap_uninit(board)
    cpus = tuple(
        power_on_cpu(slot == 0, board.reset_pc, uninit) if c.present else c for slot, c in enumerate(m.cpus)
    )
    return m._replace(cpus=cpus, mch=mch.reset(board.cfg), lpc=lpc.reset(), fwcfg=fw_cfg.reset(), pci_addr=0)


def _sfx(size: int) -> str:
    return {1: "b", 2: "w", 4: "l", 8: "q"}.get(size, str(size))
