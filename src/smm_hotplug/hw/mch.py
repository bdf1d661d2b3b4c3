"""q35 MCH (host bridge, PCI 00:00.0): SMRAM control, TSEG and the default-SMBASE window.

The device's state, its PCI configuration registers (``config_read_byte``, ``config_write``)
and what they make of memory (``tseg_range``, ``window_locked``: the machine's memory views
follow them).  Register semantics from QEMU hw/pci-host/q35.c (pc-q35-7.2) and
include/hw/pci-host/q35.h, checked against Debian's QEMU 7.2 (see
../shared/reference/observed-qemu-7.2.md).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.config import MIB, PlatformConfig
from smm_hotplug.hw.effects import NONE, Effects, Note
from smm_hotplug.hw.vmstate import Vmstate

DEVFN = (0, 0, 0)  # bus 0, device 0, function 0
# PCI IDs (include/hw/pci/pci_ids.h: PCI_DEVICE_ID_INTEL_Q35_MCH).
VENDOR_ID = 0x8086
DEVICE_ID = 0x29C0

EXT_TSEG_MBYTES = 0x50  # 16-bit; writing 0xffff queries the extended TSEG size
EXT_TSEG_QUERY = 0xFFFF
F_SMBASE = 0x9C  # "SMRAM at default SMBASE" feature register (QEMU 5.1+)
SMRAM = 0x9D
ESMRAMC = 0x9E

# 0x9c values (MCH_HOST_BRIDGE_F_SMBASE_*).
F_SMBASE_QUERY = 0xFF
F_SMBASE_IN_RAM = 0x01
F_SMBASE_LCK = 0x02

# 0x9d bits (MCH_HOST_BRIDGE_SMRAM_*).
SMRAM_C_BASE_SEG = 0x02  # bits 2:0 fixed 010
SMRAM_G_SMRAME = 0x08
SMRAM_D_LCK = 0x10
SMRAM_D_CLS = 0x20
SMRAM_D_OPEN = 0x40
SMRAM_DEFAULT = SMRAM_C_BASE_SEG  # 0x02 after reset (SeaBIOS then sets G_SMRAME: 0x0a)
SMRAM_WMASK = SMRAM_D_OPEN | SMRAM_D_CLS | SMRAM_D_LCK | SMRAM_G_SMRAME
SMRAM_WMASK_LCK = SMRAM_D_CLS

# 0x9e bits (MCH_HOST_BRIDGE_ESMRAMC_*).
ESMRAMC_T_EN = 0x01
ESMRAMC_TSEG_SZ_MASK = 0x06
ESMRAMC_TSEG_SZ_1MB = 0x00
ESMRAMC_TSEG_SZ_2MB = 0x02
ESMRAMC_TSEG_SZ_8MB = 0x04
ESMRAMC_TSEG_SZ_EXT = 0x06  # QEMU: extended TSEG, size from mch.extended-tseg-mbytes
ESMRAMC_H_SMRAME = 0x80
ESMRAMC_DEFAULT = 0x38  # SM_CACHE | SM_L1 | SM_L2, read-only ones
ESMRAMC_WMASK = ESMRAMC_H_SMRAME | ESMRAMC_TSEG_SZ_MASK | ESMRAMC_T_EN
ESMRAMC_WMASK_LCK = 0x00

# The default-SMBASE window QEMU turns into SMRAM (MCH_HOST_BRIDGE_SMBASE_ADDR/SIZE).
WINDOW_BASE = 0x30000
WINDOW_SIZE = 0x20000


class Mch(NamedTuple):
    smram: int = SMRAM_DEFAULT
    esmramc: int = ESMRAMC_DEFAULT
    ext_tseg: int = 0
    f_smbase: int = 0
    f_smbase_wmask: int = 0xFF  # 0xff at reset, 0x02 after the query, 0 once locked


def reset(cfg: PlatformConfig) -> Mch:
    ext = cfg.ext_tseg_mb if cfg.ext_tseg_mb > 0 else 0
    # mch_reset: 0x9c is an ordinary writable byte (wmask 0xff) until the SMRAM-at-SMBASE
    # feature, when the machine has it (mch.smbase-smram), takes the register over.
    return Mch(f_smbase_wmask=0xFF, ext_tseg=ext)


def smram_locked(mch: Mch) -> bool:
    return bool(mch.smram & SMRAM_D_LCK)


def window_locked(mch: Mch) -> bool:
    return mch.f_smbase == F_SMBASE_LCK and mch.f_smbase_wmask == 0


def tseg_size(mch: Mch, cfg: PlatformConfig) -> int:
    if not (mch.smram & SMRAM_G_SMRAME and mch.esmramc & ESMRAMC_T_EN):
        return 0
    sz = mch.esmramc & ESMRAMC_TSEG_SZ_MASK
    if sz == ESMRAMC_TSEG_SZ_1MB:
        return 1 * MIB
    if sz == ESMRAMC_TSEG_SZ_2MB:
        return 2 * MIB
    if sz == ESMRAMC_TSEG_SZ_8MB:
        return 8 * MIB
    return cfg.ext_tseg_mb * MIB


def tseg_range(mch: Mch, cfg: PlatformConfig) -> tuple[int, int] | None:
    """[base, end) of TSEG when it is enabled, at the top of low RAM."""
    if not (mch.smram & SMRAM_G_SMRAME and mch.esmramc & ESMRAMC_T_EN):
        return None
    size = tseg_size(mch, cfg)
    return cfg.below_4g - size, cfg.below_4g


def config_read_byte(mch: Mch, reg: int) -> int:
    if reg == 0x00:
        return VENDOR_ID & 0xFF
    if reg == 0x01:
        return VENDOR_ID >> 8
    if reg == 0x02:
        return DEVICE_ID & 0xFF
    if reg == 0x03:
        return DEVICE_ID >> 8
    if reg == 0x0B:
        return 0x06  # class: bridge
    if reg == EXT_TSEG_MBYTES:
        return mch.ext_tseg & 0xFF
    if reg == EXT_TSEG_MBYTES + 1:
        return mch.ext_tseg >> 8
    if reg == F_SMBASE:
        return mch.f_smbase
    if reg == SMRAM:
        return mch.smram
    if reg == ESMRAMC:
        return mch.esmramc
    return 0


def config_write(mch: Mch, cfg: PlatformConfig, reg: int, size: int, value: int) -> tuple[Mch, Effects]:
    """A PCI config write of ``size`` bytes at ``reg`` (pci_default_write_config + mch hooks)."""
    after = _config_write(mch, reg, size, value, cfg)
    if after == mch:
        return mch, NONE
    return after, _changes(mch, after, cfg)


def _changes(before: Mch, after: Mch, cfg: PlatformConfig) -> Effects:
    """Timeline lines for what a write changed in the memory map."""
    notes = []
    if not window_locked(before) and window_locked(after):
        notes.append(Note("hw", "MCH: default-SMBASE window 0x30000-0x4ffff locked as SMRAM"))
    if not smram_locked(before) and smram_locked(after):
        notes.append(Note("hw", "MCH: SMRAM locked (D_LCK)"))
    tb, ta = tseg_range(before, cfg), tseg_range(after, cfg)
    if tb != ta:
        text = "disabled" if ta is None else f"[0x{ta[0]:x}, 0x{ta[1]:x})"
        notes.append(Note("hw", f"MCH: TSEG {text}"))
    return tuple(notes)


def _config_write(mch: Mch, reg: int, size: int, value: int, cfg: PlatformConfig) -> Mch:
    smram, esmramc, ext, f_smbase = mch.smram, mch.esmramc, mch.ext_tseg, mch.f_smbase
    locked = bool(smram & SMRAM_D_LCK)
    touched: set[int] = set()
    for i in range(size):
        r = reg + i
        b = (value >> (8 * i)) & 0xFF
        touched.add(r)
        if r == SMRAM:
            wm = SMRAM_WMASK_LCK if locked else SMRAM_WMASK
            smram = (smram & ~wm) | (b & wm)
        elif r == ESMRAMC:
            wm = ESMRAMC_WMASK_LCK if locked else ESMRAMC_WMASK
            esmramc = (esmramc & ~wm) | (b & wm)
        elif r == EXT_TSEG_MBYTES:
            ext = (ext & 0xFF00) | b
        elif r == EXT_TSEG_MBYTES + 1:
            ext = (ext & 0x00FF) | (b << 8)
        elif r == F_SMBASE:
            wm = mch.f_smbase_wmask
            f_smbase = (f_smbase & ~wm) | (b & wm)
    new = mch._replace(smram=smram, esmramc=esmramc, ext_tseg=ext, f_smbase=f_smbase)
    if touched & {SMRAM, ESMRAMC} and new.smram & SMRAM_D_LCK:
        # mch_update_smram: D_LCK forces D_OPEN off and freezes the SMRAM configuration.
        new = new._replace(smram=new.smram & ~SMRAM_D_OPEN)
    ext_touched = bool(touched & {EXT_TSEG_MBYTES, EXT_TSEG_MBYTES + 1})
    if ext_touched and cfg.ext_tseg_mb > 0 and new.ext_tseg == EXT_TSEG_QUERY:
        new = new._replace(ext_tseg=cfg.ext_tseg_mb)
    if F_SMBASE in touched and cfg.hw.smbase_window:
        new = _update_smbase_window(new, cfg)
    return new


# The upstream fix QEMU 7.2 lacks, by history-catalog id (``HardwareFeatures.backported`` puts it
# in): "q35: Fix migration of SMRAM state" (Igor Mammedov, v2 2025-12-11, Fixes f404220e279c;
# reported by Andrey Ryabinin): the 0x9c write mask follows the register's value instead of
# deciding it, so a value loaded by migration survives.
FIX_SMBASE_MIGRATION = "qemu-q35-smbase-migration"


def _update_smbase_window(mch: Mch, cfg: PlatformConfig) -> Mch:
    """mch_update_smbase_smram: query, then lock.  QEMU 7.2 discards every value while the write
    mask is still the reset one (0xff) — a write before the query, or a value just loaded by
    migration; with the fix the mask is derived from the value (0x01: only the lock bit is
    writable; the lock bit set: locked)."""
    if mch.f_smbase == F_SMBASE_QUERY:
        return mch._replace(f_smbase=F_SMBASE_IN_RAM, f_smbase_wmask=F_SMBASE_LCK)
    if FIX_SMBASE_MIGRATION in cfg.hw.backported:
        if mch.f_smbase == F_SMBASE_IN_RAM:
            return mch._replace(f_smbase_wmask=F_SMBASE_LCK)
    elif mch.f_smbase_wmask == 0xFF:
        return mch._replace(f_smbase=0)
    if mch.f_smbase & F_SMBASE_LCK:
        return mch._replace(f_smbase=F_SMBASE_LCK, f_smbase_wmask=0)
    return mch


# -- live migration (hw/pci-host/q35.c: vmstate_mch, mch_post_load) -----------------------------
def _post_load(mch: Mch, cfg: PlatformConfig) -> Mch:
    """mch_update on the loaded configuration space.  The write masks are the destination's
    reset ones (the PCI loader copies values only, hw/pci/pci.c get_pci_config_device), so
    QEMU 7.2's 0x9c update sees a mask of 0xff, takes the value for one written before any
    query and discards it: the default-SMBASE window is no longer SMRAM and is open to a new
    query.  With FIX_SMBASE_MIGRATION the mask is re-derived from the value and the lock stays."""
    if mch.smram & SMRAM_D_LCK:  # mch_update_smram
        mch = mch._replace(smram=mch.smram & ~SMRAM_D_OPEN)
    if cfg.ext_tseg_mb > 0 and mch.ext_tseg == EXT_TSEG_QUERY:  # mch_update_ext_tseg_mbytes
        mch = mch._replace(ext_tseg=cfg.ext_tseg_mb)
    if cfg.hw.smbase_window:  # mch_update_smbase_smram (returns at once without the window)
        mch = _update_smbase_window(mch, cfg)
    return mch


# VMSTATE_PCI_DEVICE: the configuration space's values, not f_smbase_wmask.
VMSTATE = Vmstate("mch", lambda mch: ("smram", "esmramc", "ext_tseg", "f_smbase"), _post_load)
