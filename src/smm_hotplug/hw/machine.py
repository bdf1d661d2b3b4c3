"""The q35 machine: one immutable state value and the pure functions that advance it.

``Machine`` holds everything that changes: CPUs, chipset registers, fw_cfg, the CPU hotplug
block and RAM.  ``Platform`` holds what does not (the -machine/-smp/-m configuration, the
firmware ROM and the OS image on disk) and implements the hardware: address decode in the
three views (CPU in SMM, CPU not in SMM, DMA), port I/O, IPI delivery and the architectural
CPU events (SMI entry, RSM, INIT, SIPI, interrupts, instruction execution).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from smm_hotplug.code import PROGRAMS
from smm_hotplug.hw import cpuhp, fw_cfg, lpc, mch
from smm_hotplug.hw.config import PlatformConfig
from smm_hotplug.hw.cpu import (
    ABSENT,
    ALL_EXCLUDING_SELF,
    DELIVERY_MODE_NAMES,
    DM_FIXED,
    DM_INIT,
    DM_NMI,
    DM_SIPI,
    DM_SMI,
    EFLAGS_IF,
    HALTED,
    REVISION_SMBASE_RELOCATION,
    RUNNING,
    SMI_HANDLER_OFFSET,
    SMM_REVISION_ID,
    SS_GPRS,
    SS_REVISION_ID,
    SS_RFLAGS,
    SS_RIP,
    SS_SMBASE,
    WAIT_SIPI,
    Cpu,
    after_init,
    after_sipi,
    power_on_cpu,
)
from smm_hotplug.hw.iospace import IoSpace, Region
from smm_hotplug.hw.memory import Memory, Obj
from smm_hotplug.hw.trace import Log

# Access views.
SMM = "smm"  # a CPU in SMM
CPU = "cpu"  # a CPU outside SMM (and qtest)
DMA = "dma"  # a bus-master device

# Decode results.
RAM = "ram"
BLACKHOLE = "blackhole"  # SMRAM seen from outside SMM: reads all-ones, writes dropped
UNASSIGNED = "unassigned"
ROM = "rom"

ROM_BASE = 0xFFFC0000  # firmware flash (256 KiB below 4 GiB)
ADDR_MASK = (1 << 64) - 1  # physical addresses wrap at 2^64
SCI_IRQ = 9  # ICH9 SCI on GSI 9 (ACPI FADT SCI_INT)
SCI_VECTOR = 0x29  # vector the modelled IOAPIC routes the SCI to (programmed by the OS)
PCI_CONFIG_ADDRESS = 0xCF8
PCI_CONFIG_DATA = 0xCFC
MCH_DEVFN = (0, 0, 0)
LPC_DEVFN = (0, 31, 0)


DECODE_CACHE_SIZE = 1 << 16


class Machine(NamedTuple):
    cpus: tuple[Cpu, ...]
    mch: mch.Mch
    lpc: lpc.Lpc
    fwcfg: fw_cfg.FwCfg
    cpuhp: cpuhp.CpuHp
    pci_addr: int
    mem: Memory
    # Ghost state for the invariants: address ranges the firmware keeps SMM code/data in.
    smram_claims: tuple[tuple[int, int], ...] = ()
    # VMM memory of each slot's last SMBASE (only with HardwareFeatures.vmm_keeps_smbase).
    kept_smbase: tuple[int, ...] = ()


@dataclass
class Access:
    """Working context of one access: the machine being updated, who is accessing, the log."""

    m: Machine
    src: int | None  # CPU slot, or None for qtest/DMA/management
    actor: str
    log: Log
    smm: bool = False


@dataclass(frozen=True)
class Platform:
    cfg: PlatformConfig
    rom: dict[int, Obj] = field(default_factory=dict)  # firmware flash: address -> code object
    reset_pc: tuple[int, str] | None = None
    disk: tuple[tuple[int, str], ...] = ()  # OS image: (address, program) pairs
    software: Any = None  # firmware/OS build options, handed to programs through the bus
    # Invariant monitor called just before a CPU is ejected: (platform, machine, slot, log).
    eject_monitor: Callable[[Platform, Machine, int, Log], None] | None = None

    # -- power on -----------------------------------------------------------------------
    def power_on(self) -> Machine:
        cfg = self.cfg
        present = cfg.max_cpus if cfg.hw.all_cpus_at_boot else cfg.boot_cpus
        cpus = tuple(
            power_on_cpu(slot == 0, self.reset_pc) if slot < present else Cpu()
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

    def system_reset(self, m: Machine) -> Machine:
        """qemu_system_reset: every present CPU is RESET (SMBASE back to 0x30000), the chipset
        and fw_cfg return to their reset state; RAM and the CPU hotplug block are kept."""
        cpus = tuple(
            power_on_cpu(slot == 0, self.reset_pc) if c.present else c for slot, c in enumerate(m.cpus)
        )
        return m._replace(
            cpus=cpus, mch=mch.reset(self.cfg), lpc=lpc.reset(), fwcfg=fw_cfg.reset(), pci_addr=0
        )

    # -- memory decode ---------------------------------------------------------------------
    def _tseg(self, mc: mch.Mch) -> tuple[int, int] | None:
        key = (mc.smram, mc.esmramc)
        cache = self._tseg_cache
        if key not in cache:
            cache[key] = mch.tseg_range(mc, self.cfg)
        return cache[key]

    @cached_property
    def _tseg_cache(self) -> dict:
        return {}

    def decode(self, m: Machine, addr: int, view: str) -> tuple[str, int]:
        """What ``addr`` reaches in ``view``, and where that section ends."""
        # Only the chipset registers decide, and programs touch few addresses: memoized (and
        # emptied when it grows, as it can under arbitrary qtest accesses).
        key = (m.mch, addr, view)
        cache = self._decode_cache
        got = cache.get(key)
        if got is None:
            if len(cache) >= DECODE_CACHE_SIZE:
                cache.clear()
            got = cache[key] = self._decode(m.mch, addr, view)
        return got

    @cached_property
    def _decode_cache(self) -> dict:
        return {}

    def _decode(self, mc: mch.Mch, addr: int, view: str) -> tuple[str, int]:
        cfg = self.cfg
        low = cfg.below_4g
        if addr < low:
            end = low
            tseg = self._tseg(mc)
            if tseg is not None:
                tb, te = tseg
                if addr >= tb:
                    return (RAM if view == SMM else BLACKHOLE), te
                end = tb
            if view == DMA and cfg.hw.dma_guard_default_smbase:
                if 0x30000 <= addr < 0x40000:
                    return BLACKHOLE, 0x40000
                if addr < 0x30000:
                    end = min(end, 0x30000)
            if mc.f_smbase_wmask == 0 and mc.f_smbase == mch.F_SMBASE_LCK:
                wb = mch.WINDOW_BASE
                we = wb + mch.WINDOW_SIZE
                if wb <= addr < we:
                    return (RAM if view == SMM else BLACKHOLE), we
                if addr < wb:
                    end = min(end, wb)
            return RAM, end
        if addr < ROM_BASE:
            return UNASSIGNED, ROM_BASE
        if addr < 1 << 32:
            return ROM, 1 << 32
        if addr < (1 << 32) + cfg.above_4g:
            return RAM, (1 << 32) + cfg.above_4g
        return UNASSIGNED, 1 << 64

    def _check_isolation(self, m: Machine, addr: int, size: int, view: str, acc: str, log: Log) -> None:
        if view == SMM:
            return
        for base, length in m.smram_claims:
            if addr < base + length and base < addr + size:
                who = "DMA" if view == DMA else "non-SMM"
                log.violate(
                    "smram-isolation",
                    f"{who} {acc} of 0x{addr:x}+{size} reached SMRAM [0x{base:x}, 0x{base + length:x})",
                )
                return

    def mem_read(self, m: Machine, addr: int, size: int, view: str, log: Log | None = None) -> int:
        value = 0
        done = 0
        while done < size:
            a = (addr + done) & ADDR_MASK
            kind, end = self.decode(m, a, view)
            n = min(size - done, end - a)
            if kind == RAM:
                if log is not None:
                    self._check_isolation(m, a, n, view, "read", log)
                part = m.mem.read(a, n)
            elif kind == BLACKHOLE:
                part = (1 << (8 * n)) - 1
            else:
                part = 0
            value |= part << (8 * done)
            done += n
        return value

    def mem_write(
        self, m: Machine, addr: int, size: int, value: int, view: str, writer: str, log: Log | None
    ) -> Machine:
        mem = m.mem
        done = 0
        while done < size:
            a = (addr + done) & ADDR_MASK
            kind, end = self.decode(m, a, view)
            n = min(size - done, end - a)
            if kind == RAM:
                if log is not None:
                    self._check_isolation(m, a, n, view, "write", log)
                mem = mem.write(a, n, (value >> (8 * done)) & ((1 << (8 * n)) - 1), writer)
            done += n
        return m if mem is m.mem else m._replace(mem=mem)

    def mem_fill(
        self, m: Machine, addr: int, size: int, byte: int, view: str, writer: str, log: Log | None
    ) -> Machine:
        mem = m.mem
        done = 0
        while done < size:
            a = (addr + done) & ADDR_MASK
            kind, end = self.decode(m, a, view)
            n = min(size - done, end - a)
            if kind == RAM:
                if log is not None:
                    self._check_isolation(m, a, n, view, "write", log)
                mem = mem.fill(a, n, byte, writer)
            done += n
        return m._replace(mem=mem)

    def mem_put(self, m: Machine, addr: int, obj: Obj, view: str, log: Log | None) -> Machine:
        """Store a symbolic object (code, saved register image) at ``addr``."""
        kind, _ = self.decode(m, addr, view)
        if kind != RAM:
            return m
        if log is not None:
            self._check_isolation(m, addr, obj.size, view, "write", log)
        return m._replace(mem=m.mem.put(addr, obj))

    def mem_object(self, m: Machine, addr: int, view: str) -> Obj | None:
        kind, _ = self.decode(m, addr, view)
        if kind == ROM:
            return self.rom.get(addr)
        if kind != RAM:
            return None
        return m.mem.object_at(addr)

    def fetch(self, m: Machine, addr: int, view: str) -> tuple[Obj | None, str | None]:
        """The code a CPU executes at ``addr`` and who wrote those bytes."""
        kind, _ = self.decode(m, addr, view)
        if kind == ROM:
            obj = self.rom.get(addr)
            return obj, ("firmware" if obj is not None else None)
        if kind != RAM:
            return None, None
        obj = m.mem.object_at(addr)
        if obj is not None and obj.kind == "code":
            return obj, obj.writer
        return None, m.mem.writer(addr)

    # -- port I/O ----------------------------------------------------------------------------
    def io_read(
        self, m: Machine, port: int, size: int, src: int | None, actor: str, log: Log
    ) -> tuple[Machine, int]:
        acc = Access(m, src, actor, log, smm=src is not None and m.cpus[src].smm)
        acc, value = self._io_space(m).read(acc, port, size)
        if log.record:
            log.add("io", actor, f"in{_sfx(size)} 0x{port:04x} -> 0x{value:0{2 * size}x}", detail=True)
        return acc.m, value

    def io_write(
        self, m: Machine, port: int, size: int, value: int, src: int | None, actor: str, log: Log
    ) -> Machine:
        if log.record:
            log.add("io", actor, f"out{_sfx(size)} 0x{port:04x} <- 0x{value:0{2 * size}x}", detail=True)
        acc = Access(m, src, actor, log, smm=src is not None and m.cpus[src].smm)
        acc = self._io_space(m).write(acc, port, size, value)
        return acc.m

    def _io_space(self, m: Machine) -> IoSpace:
        key = (lpc.pm_io_base(m.lpc), m.cpuhp.modern)
        cache = self._io_cache()
        space = cache.get(key)
        if space is None:
            space = cache[key] = IoSpace(self._regions(*key))
        return space

    def _io_cache(self) -> dict:
        return self._cache("io")

    def _cache(self, name: str) -> dict:
        """Per-platform memo tables (the platform is static, so they never go stale)."""
        key = f"_cache_{name}"
        cache = self.__dict__.get(key)
        if cache is None:
            cache = {}
            object.__setattr__(self, key, cache)
        return cache

    def _regions(self, pm_base: int | None, modern: bool) -> list[Region]:
        regions = [
            Region("pci-conf-idx", PCI_CONFIG_ADDRESS, 4, self._pci_idx_read, self._pci_idx_write),
            Region("pci-conf-data", PCI_CONFIG_DATA, 4, self._pci_data_read, self._pci_data_write),
            Region("apm", lpc.APM_CNT, 2, self._apm_read, self._apm_write, impl_max=1),
            Region(
                "fwcfg",
                fw_cfg.PORT_SELECTOR,
                2,
                self._fwcfg_read,
                self._fwcfg_write,
                accepts=lambda off, size, w: size == 1 or (w and size == 2 and off == 0),
            ),
            Region(
                "fwcfg.dma",
                fw_cfg.PORT_DMA,
                8,
                self._fwcfg_dma_read,
                self._fwcfg_dma_write,
                valid_max=8,
                impl_max=8,
                big_endian=True,
                accepts=lambda off, size, w: (
                    not w or (size == 4 and off in (0, 4)) or (size == 8 and off == 0)
                ),
            ),
        ]
        if modern:
            regions.append(
                Region("acpi-cpu-hotplug", cpuhp.BASE, cpuhp.MODERN_LEN, self._cpuhp_read, self._cpuhp_write)
            )
            if self.cfg.hw.hotplug_smbase_regs:
                regions.append(
                    Region(
                        "cpu-smbase-regs",
                        cpuhp.BASE + cpuhp.SMBASE_REG,
                        cpuhp.SMBASE_REG_LEN,
                        self._smbase_reg_read,
                        self._smbase_reg_write,
                        valid_min=4,
                    )
                )
        else:
            regions.append(
                Region(
                    "acpi-cpu-hotplug-legacy",
                    cpuhp.BASE,
                    cpuhp.LEGACY_LEN,
                    self._cpuhp_legacy_read,
                    self._cpuhp_legacy_write,
                    valid_max=1,
                )
            )
        if pm_base is not None:
            regions += [
                Region(
                    "acpi-evt",
                    pm_base + lpc.PM1_STS,
                    4,
                    self._pm_read(lpc.PM1_STS),
                    self._pm_write(lpc.PM1_STS),
                    valid_max=2,
                    impl_min=2,
                ),
                Region(
                    "acpi-cnt",
                    pm_base + lpc.PM1_CNT,
                    2,
                    self._pm_read(lpc.PM1_CNT),
                    self._pm_write(lpc.PM1_CNT),
                    valid_max=2,
                    impl_min=2,
                ),
                Region(
                    "acpi-tmr",
                    pm_base + lpc.PM_TMR,
                    4,
                    self._pm_read(lpc.PM_TMR),
                    self._pm_write(lpc.PM_TMR),
                    valid_min=4,
                ),
                Region(
                    "acpi-gpe0",
                    pm_base + lpc.GPE0_STS,
                    lpc.GPE0_LEN,
                    self._pm_read(lpc.GPE0_STS),
                    self._pm_write(lpc.GPE0_STS),
                    impl_max=1,
                ),
                Region(
                    "acpi-smi",
                    pm_base + lpc.SMI_EN,
                    8,
                    self._pm_read(lpc.SMI_EN),
                    self._pm_write(lpc.SMI_EN),
                    valid_min=4,
                ),
            ]
        return regions

    # PCI configuration mechanism #1 (hw/pci/pci_host.c).
    def _pci_idx_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        return acc, acc.m.pci_addr

    def _pci_idx_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        if off == 0 and size == 4:
            acc.m = acc.m._replace(pci_addr=value)
        return acc

    def _pci_target(self, acc: Access, off: int) -> tuple[tuple[int, int, int], int] | None:
        addr = acc.m.pci_addr
        if not addr & 0x80000000:
            return None
        devfn = ((addr >> 16) & 0xFF, (addr >> 11) & 0x1F, (addr >> 8) & 0x7)
        return devfn, (addr & 0xFC) | off

    def _pci_data_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        target = self._pci_target(acc, off)
        if target is None:
            return acc, 0xFFFFFFFF
        devfn, reg = target
        if devfn == MCH_DEVFN:
            rd = lambda r: mch.config_read_byte(acc.m.mch, r)  # noqa: E731
        elif devfn == LPC_DEVFN:
            rd = lambda r: lpc.config_read_byte(acc.m.lpc, r)  # noqa: E731
        else:
            return acc, 0xFFFFFFFF
        value = 0
        for i in range(size):
            if reg + i < 256:
                value |= rd(reg + i) << (8 * i)
        if acc.log.record:
            acc.log.add(
                "io",
                acc.actor,
                f"pci {devfn[1]:02x}.{devfn[2]} cfg[0x{reg:02x}] -> 0x{value:0{2 * size}x}",
                detail=True,
            )
        return acc, value

    def _pci_data_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        target = self._pci_target(acc, off)
        if target is None:
            return acc
        devfn, reg = target
        if acc.log.record:
            acc.log.add(
                "io",
                acc.actor,
                f"pci {devfn[1]:02x}.{devfn[2]} cfg[0x{reg:02x}] <- 0x{value:0{2 * size}x}",
                detail=True,
            )
        if devfn == MCH_DEVFN:
            before = acc.m.mch
            after = mch.config_write(before, reg, size, value, self.cfg)
            acc.m = acc.m._replace(mch=after)
            self._log_mch_change(acc, before, after)
        elif devfn == LPC_DEVFN:
            acc.m = acc.m._replace(lpc=lpc.config_write(acc.m.lpc, reg, size, value))
        return acc

    def _log_mch_change(self, acc: Access, before: mch.Mch, after: mch.Mch) -> None:
        if not mch.window_locked(before) and mch.window_locked(after):
            acc.log.add("hw", acc.actor, "MCH: default-SMBASE window 0x30000-0x4ffff locked as SMRAM")
        if not mch.smram_locked(before) and mch.smram_locked(after):
            acc.log.add("hw", acc.actor, "MCH: SMRAM locked (D_LCK)")
        tb, ta = mch.tseg_range(before, self.cfg), mch.tseg_range(after, self.cfg)
        if tb != ta:
            text = "disabled" if ta is None else f"[0x{ta[0]:x}, 0x{ta[1]:x})"
            acc.log.add("hw", acc.actor, f"MCH: TSEG {text}")

    # APM (hw/isa/apm.c + ich9_apm_ctrl_changed).
    def _apm_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        return acc, acc.m.lpc.apm_cnt if off == 0 else acc.m.lpc.apm_sts

    def _apm_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        new_lpc, smi = lpc.apm_write(acc.m.lpc, off, value)
        acc.m = acc.m._replace(lpc=new_lpc)
        if off == 0:
            acc.log.add("io", acc.actor, f"APM_CNT <- 0x{value:02x}")
        if smi == "broadcast":
            acc.log.add("hw", acc.actor, "APM: broadcast SMI to every CPU")
            cpus = tuple(c._replace(smi=True) if c.mode != ABSENT else c for c in acc.m.cpus)
            acc.m = acc.m._replace(cpus=cpus)
        elif smi == "self" and acc.src is not None:
            acc.log.add("hw", acc.actor, f"APM: SMI to cpu{acc.src}")
            acc.m = _set_cpu(acc.m, acc.src, acc.m.cpus[acc.src]._replace(smi=True))
        return acc

    # PM I/O block.
    def _pm_read(self, base_off: int):
        def read(acc: Access, off: int, size: int) -> tuple[Access, int]:
            return acc, lpc.pm_read(acc.m.lpc, base_off + off, size)

        return read

    def _pm_write(self, base_off: int):
        def write(acc: Access, off: int, size: int, value: int) -> Access:
            acc.m = acc.m._replace(lpc=lpc.pm_write(acc.m.lpc, base_off + off, size, value))
            return acc

        return write

    # fw_cfg.
    def _smi_files(self, m: Machine) -> tuple[int, int, int]:
        return (m.lpc.smi_requested, m.lpc.smi_features_ok, self.cfg.hw.supported_smi_features)

    def fwcfg_select(self, acc: Access, key: int) -> None:
        fc = acc.m.fwcfg
        if (key & fw_cfg.ENTRY_MASK) >= fw_cfg.max_entry():
            acc.m = acc.m._replace(fwcfg=fc._replace(entry=fw_cfg.INVALID, offset=0))
            return
        acc.m = acc.m._replace(fwcfg=fc._replace(entry=key, offset=0))
        if fw_cfg.file_name(self.cfg, key) == fw_cfg.FILE_FEATURES_OK:
            before = acc.m.lpc
            after = lpc.features_ok_selected(before, self.cfg.hw.supported_smi_features)
            acc.m = acc.m._replace(lpc=after)
            if after.smi_features_ok and not before.smi_features_ok:
                acc.log.add("hw", acc.actor, f"fw_cfg: SMI features negotiated: 0x{after.smi_negotiated:x}")
            elif not after.smi_features_ok:
                acc.log.add(
                    "hw", acc.actor, f"fw_cfg: SMI feature request 0x{after.smi_requested:x} rejected"
                )

    def _fwcfg_item(self, m: Machine) -> bytes | None:
        if m.fwcfg.entry == fw_cfg.INVALID:
            return None
        return fw_cfg.item(self.cfg, m.fwcfg.entry, self._smi_files(m))

    def _fwcfg_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        data = self._fwcfg_item(acc.m)
        fc = acc.m.fwcfg
        if data is None or fc.offset >= len(data):
            return acc, 0
        acc.m = acc.m._replace(fwcfg=fc._replace(offset=fc.offset + 1))
        return acc, data[fc.offset]

    def _fwcfg_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        if size == 2 and off == 0:
            self.fwcfg_select(acc, value)
        # Byte writes to the data port are ignored (QEMU 2.4+).
        return acc

    def _fwcfg_dma_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        shift = (8 - off - size) * 8
        return acc, (fw_cfg.DMA_SIGNATURE >> shift) & ((1 << (8 * size)) - 1)

    def _fwcfg_dma_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        fc = acc.m.fwcfg
        if size == 4 and off == 0:
            acc.m = acc.m._replace(fwcfg=fc._replace(dma_addr=value << 32))
        elif size == 4 and off == 4:
            acc.m = acc.m._replace(fwcfg=fc._replace(dma_addr=fc.dma_addr | value))
            self._fwcfg_dma_transfer(acc)
        elif size == 8 and off == 0:
            acc.m = acc.m._replace(fwcfg=fc._replace(dma_addr=value))
            self._fwcfg_dma_transfer(acc)
        return acc

    def _fwcfg_dma_transfer(self, acc: Access) -> None:
        """fw_cfg_dma_transfer: the device reads the descriptor and moves data by DMA."""
        desc_addr = acc.m.fwcfg.dma_addr
        acc.m = acc.m._replace(fwcfg=acc.m.fwcfg._replace(dma_addr=0))
        raw = self.mem_read(acc.m, desc_addr, 16, DMA, acc.log).to_bytes(16, "little")
        control, length, address = struct.unpack(">IIQ", raw)
        if control & fw_cfg.DMA_CTL_SELECT:
            self.fwcfg_select(acc, control >> 16)
        read = write = False
        if control & fw_cfg.DMA_CTL_READ:
            read = True
        elif control & fw_cfg.DMA_CTL_WRITE:
            write = True
        elif not control & fw_cfg.DMA_CTL_SKIP:
            length = 0
        status = 0
        name = fw_cfg.file_name(self.cfg, acc.m.fwcfg.entry) if acc.m.fwcfg.entry != fw_cfg.INVALID else None
        while length > 0 and not status & fw_cfg.DMA_CTL_ERROR:
            data = self._fwcfg_item(acc.m)
            fc = acc.m.fwcfg
            if data is None or fc.offset >= len(data):
                n = length
                if read:
                    acc.m = self.mem_fill(acc.m, address, n, 0, DMA, "fw_cfg", acc.log)
                if write:
                    status |= fw_cfg.DMA_CTL_ERROR
            else:
                n = min(length, len(data) - fc.offset)
                if read:
                    chunk = int.from_bytes(data[fc.offset : fc.offset + n], "little")
                    acc.m = self.mem_write(acc.m, address, n, chunk, DMA, "fw_cfg", acc.log)
                if write:
                    if name not in fw_cfg.WRITABLE_FILES or n != length:
                        status |= fw_cfg.DMA_CTL_ERROR
                    else:
                        blob = self.mem_read(acc.m, address, n, DMA, acc.log).to_bytes(n, "little")
                        self._fwcfg_file_written(acc, name, fc.offset, blob)
                acc.m = acc.m._replace(fwcfg=acc.m.fwcfg._replace(offset=fc.offset + n))
            address += n
            length -= n
        acc.m = self.mem_write(
            acc.m, desc_addr, 4, int.from_bytes(struct.pack(">I", status), "little"), DMA, "fw_cfg", acc.log
        )
        acc.log.add(
            "io",
            acc.actor,
            f"fw_cfg DMA {'write' if write else 'read' if read else 'skip'}"
            f" {name or hex(acc.m.fwcfg.entry)} status 0x{status:x}",
            detail=True,
        )

    def _fwcfg_file_written(self, acc: Access, name: str | None, offset: int, blob: bytes) -> None:
        if name == fw_cfg.FILE_REQUESTED:
            cur = bytearray(struct.pack("<Q", acc.m.lpc.smi_requested))
            cur[offset : offset + len(blob)] = blob
            value = struct.unpack("<Q", bytes(cur[:8]))[0]
            acc.m = acc.m._replace(lpc=acc.m.lpc._replace(smi_requested=value))
            acc.log.add("hw", acc.actor, f"fw_cfg: etc/smi/requested-features <- 0x{value:x}")

    # ACPI CPU hotplug block.
    def present_apic_ids(self, m: Machine) -> frozenset[int]:
        return frozenset(self.cfg.apic_id(s) for s, c in enumerate(m.cpus) if c.mode != ABSENT)

    def _cpuhp_legacy_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        return acc, cpuhp.legacy_read_byte(self.present_apic_ids(acc.m), off)

    def _cpuhp_legacy_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        if off == 0 and value == 0:
            acc.log.add("hw", acc.actor, "CPU hotplug block switched to the modern interface")
            acc.m = acc.m._replace(
                cpuhp=cpuhp.initial(self.cfg.max_cpus, False)._replace(
                    modern=True, smbase_regs=acc.m.cpuhp.smbase_regs
                )
            )
        return acc

    def _cpuhp_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        hp = acc.m.cpuhp
        n = self.cfg.max_cpus
        if hp.selector >= n:
            return acc, 0
        sel = hp.selector
        if off == cpuhp.FLAGS:
            return acc, cpuhp.flags(hp, sel, acc.m.cpus[sel].mode != ABSENT)
        if off == cpuhp.DATA:
            if hp.command == cpuhp.CMD_GET_NEXT_WITH_EVENT:
                return acc, sel
            if hp.command == cpuhp.CMD_GET_ARCH_ID:
                return acc, self.cfg.apic_id(sel) & 0xFFFFFFFF
            return acc, 0
        if off == cpuhp.SELECTOR:  # command data 2
            if hp.command == cpuhp.CMD_GET_ARCH_ID:
                return acc, self.cfg.apic_id(sel) >> 32
            return acc, 0
        return acc, 0

    def _cpuhp_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        hp = acc.m.cpuhp
        n = self.cfg.max_cpus
        if off == cpuhp.SELECTOR:
            acc.m = acc.m._replace(cpuhp=hp._replace(selector=value))
            return acc
        if hp.selector >= n:
            return acc
        sel = hp.selector
        if off == cpuhp.FLAGS:
            if value & cpuhp.F_INSERT:
                hp = hp._replace(insert=cpuhp.set_bit(hp.insert, sel, False))
            elif value & cpuhp.F_REMOVE:
                hp = hp._replace(remove=cpuhp.set_bit(hp.remove, sel, False))
            elif value & cpuhp.F_EJECT:
                if sel == 0 or acc.m.cpus[sel].mode == ABSENT:
                    return acc
                acc.m = self.eject(acc.m, sel, acc)
                return acc
            elif value & cpuhp.F_FW_REMOVE:
                if sel == 0 or acc.m.cpus[sel].mode == ABSENT:
                    return acc
                hp = hp._replace(fw_remove=cpuhp.set_bit(hp.fw_remove, sel, True))
            acc.m = acc.m._replace(cpuhp=hp)
        elif off == cpuhp.COMMAND:
            if value < cpuhp.CMD_MAX:
                hp = hp._replace(command=value)
                if value == cpuhp.CMD_GET_NEXT_WITH_EVENT:
                    hp = hp._replace(selector=cpuhp.next_with_event(hp, n))
                acc.m = acc.m._replace(cpuhp=hp)
        elif off == cpuhp.DATA:
            if hp.command == cpuhp.CMD_OST_EVENT:
                acc.m = acc.m._replace(cpuhp=cpuhp.set_ost(hp, sel, event=value))
            elif hp.command == cpuhp.CMD_OST_STATUS:
                hp = cpuhp.set_ost(hp, sel, status=value)
                acc.m = acc.m._replace(cpuhp=hp)
                event, status = cpuhp.ost_of(hp, sel)
                acc.log.add(
                    "qmp",
                    acc.actor,
                    f"ACPI_DEVICE_OST slot {sel} event 0x{event:x} status 0x{status:x}",
                    data=("ACPI_DEVICE_OST", sel, event, status),
                )
        return acc

    def _smbase_reg_read(self, acc: Access, off: int, size: int) -> tuple[Access, int]:
        hp = acc.m.cpuhp
        if hp.selector >= self.cfg.max_cpus:
            return acc, 0
        return acc, hp.smbase_regs[hp.selector]

    def _smbase_reg_write(self, acc: Access, off: int, size: int, value: int) -> Access:
        hp = acc.m.cpuhp
        if hp.selector >= self.cfg.max_cpus:
            return acc
        if not acc.smm:
            acc.log.add("hw", acc.actor, "hotplug SMBASE register write from outside SMM ignored")
            return acc
        regs = list(hp.smbase_regs)
        regs[hp.selector] = value
        acc.m = acc.m._replace(cpuhp=hp._replace(smbase_regs=tuple(regs)))
        return acc

    # -- CPU lifecycle effects (used by the hotplug block and by management) -----------------
    def eject(self, m: Machine, slot: int, acc: Access) -> Machine:
        """Eject (bit 3): QEMU unplugs and destroys the CPU at once; DEVICE_DELETED follows."""
        if self.eject_monitor is not None:
            self.eject_monitor(self, m, slot, acc.log)
        m = self.remove_cpu(m, slot)
        hp = m.cpuhp._replace(fw_remove=cpuhp.set_bit(m.cpuhp.fw_remove, slot, False))
        acc.log.add("hw", acc.actor, f"cpu{slot} (APIC ID {self.cfg.apic_id(slot)}) ejected")
        acc.log.add("qmp", acc.actor, f"DEVICE_DELETED cpu{slot}", data=("DEVICE_DELETED", slot))
        return m._replace(cpuhp=hp)

    def remove_cpu(self, m: Machine, slot: int) -> Machine:
        """The CPU object goes away; a VMM that keeps SMBASE remembers the slot's value."""
        if self.cfg.hw.vmm_keeps_smbase:
            kept = list(m.kept_smbase or (0,) * self.cfg.max_cpus)
            kept[slot] = m.cpus[slot].smbase
            m = m._replace(kept_smbase=tuple(kept))
        return _set_cpu(m, slot, Cpu())

    def sci_asserted(self, m: Machine) -> bool:
        return lpc.sci_level(m.lpc)

    # -- IPIs ---------------------------------------------------------------------------------
    def send_ipi(self, m: Machine, src: int, dest: int, mode: int, vector: int, log: Log) -> Machine:
        cfg = self.cfg
        targets = [
            s
            for s, c in enumerate(m.cpus)
            if c.mode != ABSENT and (s != src if dest == ALL_EXCLUDING_SELF else cfg.apic_id(s) == dest)
        ]
        dname = "all-but-self" if dest == ALL_EXCLUDING_SELF else f"APIC {dest}"
        if log.record:
            log.add(
                "ipi",
                f"cpu{src}",
                f"{DELIVERY_MODE_NAMES.get(mode, mode)} IPI -> {dname}"
                + (f" vector 0x{vector:02x}" if mode in (DM_FIXED, DM_SIPI) else ""),
                data=("ipi", mode, tuple(targets)),
            )
        for s in targets:
            m = self.deliver(m, s, mode, vector, log)
        return m

    def deliver(self, m: Machine, s: int, mode: int, vector: int, log: Log) -> Machine:
        c = m.cpus[s]
        if mode == DM_SMI:
            return _set_cpu(m, s, c._replace(smi=True))
        if mode == DM_INIT:
            if c.smm and self.cfg.hw.init_in_smm == "hold":
                log.add("cpu", f"cpu{s}", "INIT held until RSM")
                return _set_cpu(m, s, c._replace(init=True))
            if c.smm:
                # QEMU TCG: INIT resets the CPU out of SMM at once and drops a pending SMI.
                log.add("cpu", f"cpu{s}", "INIT in SMM resets the CPU out of SMM (TCG semantics)")
                return _set_cpu(m, s, after_init(c)._replace(smi=False))
            return _set_cpu(m, s, after_init(c))
        if mode == DM_SIPI:
            if c.mode == WAIT_SIPI:
                log.add("cpu", f"cpu{s}", f"SIPI: starts at 0x{vector << 12:05x}")
                return _set_cpu(m, s, after_sipi(c, vector))
            return m  # a SIPI to a CPU not waiting for one is ignored
        if mode == DM_FIXED:
            return _set_cpu(m, s, c._replace(irq=c.irq | (1 << vector)))
        if mode == DM_NMI:
            return m  # NMIs are not modelled beyond delivery
        return m

    # -- architectural CPU steps -----------------------------------------------------------
    def cpu_enabled(self, m: Machine, slot: int) -> bool:
        """Cheap pre-check: can this CPU possibly make a step?"""
        c = m.cpus[slot]
        if c.mode == ABSENT:
            return False
        if c.init and (not c.smm or self.cfg.hw.init_in_smm != "hold"):
            return True
        if c.mode == WAIT_SIPI:
            return False
        if c.smi and not c.smm:
            return True
        if not c.smm and c.intr and c.idt and (c.irq or (slot == 0 and self.sci_asserted(m))):
            return True
        return c.mode == RUNNING

    def cpu_step(self, m: Machine, slot: int, log: Log) -> Machine | None:
        """One architectural step of CPU ``slot``; None when it cannot move."""
        c = m.cpus[slot]
        if c.mode == ABSENT:
            return None
        if c.init and (not c.smm or self.cfg.hw.init_in_smm != "hold"):
            log.add("cpu", f"cpu{slot}", "INIT: waits for SIPI")
            return _set_cpu(m, slot, after_init(c))
        if c.mode == WAIT_SIPI:
            return None
        if c.smi and not c.smm:
            return self.smi_enter(m, slot, log)
        if not c.smm and c.intr and c.idt:
            vector = None
            if c.irq:
                vector = (c.irq & -c.irq).bit_length() - 1
                c = c._replace(irq=c.irq & ~(1 << vector))
            elif slot == 0 and self.sci_asserted(m):
                vector = SCI_VECTOR
            if vector is not None:
                log.add("cpu", f"cpu{slot}", f"interrupt vector 0x{vector:02x}")
                frame = (c.pc, c.regs)
                c = c._replace(mode=RUNNING, pc=(c.idt, "entry"), regs=(vector,), intr=False, frame=frame)
                return _set_cpu(m, slot, c)
        if c.mode != RUNNING:
            return None
        return self.execute(m, slot, log)

    def smi_enter(self, m: Machine, slot: int, log: Log) -> Machine:
        """SMI: save state at SMBASE+0xFC00.., enter SMM at SMBASE+0x8000 (SDM 32.5)."""
        c = m.cpus[slot]
        base = c.smbase
        w = "cpu"
        m = self.mem_write(m, base + SS_REVISION_ID, 4, SMM_REVISION_ID, SMM, w, None)
        m = self.mem_write(m, base + SS_SMBASE, 4, base, SMM, w, None)
        m = self.mem_write(m, base + SS_RFLAGS, 8, 0x2 | (EFLAGS_IF if c.intr else 0), SMM, w, None)
        m = self.mem_put(m, base + SS_RIP, Obj("sym", ("rip", c.pc), 8, w), SMM, None)
        m = self.mem_put(m, base + SS_GPRS, Obj("sym", ("gprs", c.regs, c.frame, c.idt), 0x80, w), SMM, None)
        entry = base + SMI_HANDLER_OFFSET
        if log.record:
            log.add(
                "smi",
                f"cpu{slot}",
                f"SMI entry: SMBASE 0x{base:x}, executes at 0x{entry:x}",
                data=("smi", slot, base),
            )
        c = c._replace(
            smm=True, smi=False, intr=False, mode=RUNNING, pc=(entry, "entry"), regs=(), frame=None
        )
        return _set_cpu(m, slot, c)

    def rsm(self, m: Machine, slot: int, log: Log) -> Machine:
        c = m.cpus[slot]
        base = c.smbase
        rev = self.mem_read(m, base + SS_REVISION_ID, 4, SMM)
        new_base = self.mem_read(m, base + SS_SMBASE, 4, SMM) if rev & REVISION_SMBASE_RELOCATION else base
        rip = self.mem_object(m, base + SS_RIP, SMM)
        if rip is not None and rip.kind == "sym" and rip.value[0] == "rip":
            pc = rip.value[1]
        else:
            pc = (self.mem_read(m, base + SS_RIP, 8, SMM), "entry")
        gprs = self.mem_object(m, base + SS_GPRS, SMM)
        regs, frame, idt = (
            (gprs.value[1], gprs.value[2], gprs.value[3])
            if (gprs is not None and gprs.kind == "sym" and gprs.value[0] == "gprs")
            else ((), None, 0)
        )
        rflags = self.mem_read(m, base + SS_RFLAGS, 8, SMM)
        if log.record:
            log.add(
                "rsm",
                f"cpu{slot}",
                f"RSM: SMBASE 0x{base:x} -> 0x{new_base:x}",
                data=("rsm", slot, base, new_base),
            )
        c = c._replace(
            smm=False,
            smbase=new_base,
            mode=RUNNING,
            pc=pc,
            regs=regs,
            frame=frame,
            idt=idt,
            intr=bool(rflags & EFLAGS_IF),
        )
        return _set_cpu(m, slot, c)

    def execute(self, m: Machine, slot: int, log: Log) -> Machine | None:
        """One instruction step, followed by any steps that join it (see code.Program.step)."""
        out = self._execute_one(m, slot, log)
        return None if out is None else self._run_joins(out, slot, log)

    def _run_joins(self, m: Machine, slot: int, log: Log) -> Machine:
        for _ in range(64):
            c = m.cpus[slot]
            if c.mode != RUNNING or c.pc is None:
                break
            obj = self.mem_object(m, c.pc[0], SMM if c.smm else CPU)
            prog = PROGRAMS.get(obj.value) if obj is not None and obj.kind == "code" else None  # type: ignore[arg-type]
            if prog is None or c.pc[1] not in prog.joins:
                break
            nxt = self._execute_one(m, slot, log)
            if nxt is None:
                break
            m = nxt
        return m

    def _execute_one(self, m: Machine, slot: int, log: Log) -> Machine | None:
        from smm_hotplug.hw.bus import Bus

        c = m.cpus[slot]
        assert c.pc is not None
        base, label = c.pc
        view = SMM if c.smm else CPU
        obj, writer = self.fetch(m, base, view)
        if c.smm and writer != "firmware":
            what = obj.value if obj is not None else "data"
            log.violate(
                "smm-code-integrity",
                f"cpu{slot} executes {what} at 0x{base:x} in SMM, written by {writer or 'nobody'}",
            )
        prog = PROGRAMS.get(obj.value) if obj is not None else None  # type: ignore[arg-type]
        step = prog.steps.get(label) if prog is not None else None
        if step is None:
            log.add("cpu", f"cpu{slot}", f"executes non-code at 0x{base:x}: shutdown")
            return _set_cpu(m, slot, c._replace(mode=HALTED, intr=False, pc=None))
        bus = Bus(self, m, slot, log, writer or "unknown", prog.name)
        result = step(bus, c.regs)
        if result is None:
            return None
        return bus.finish(result)


def _set_cpu(m: Machine, slot: int, c: Cpu) -> Machine:
    cpus = m.cpus
    return Machine._make(((*cpus[:slot], c, *cpus[slot + 1 :]), *m[1:]))  # _replace, faster


def set_cpu(m: Machine, slot: int, c: Cpu) -> Machine:
    return _set_cpu(m, slot, c)


def _sfx(size: int) -> str:
    return {1: "b", 2: "w", 4: "l", 8: "q"}.get(size, str(size))
