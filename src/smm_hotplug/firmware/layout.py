"""Where the OVMF-like firmware puts things.

SMRAM layout follows OVMF/PiSmmCpuDxeSmm (../shared/reference/firmware-facts.md): one SMBASE
tile per *possible* CPU, 8 KiB apart: SmBase[i] = RelocationAreaStart + i*0x2000 - 0x8000,
so CPU i enters at RelocationAreaStart + i*0x2000 and saves state at SmBase[i]+0xFC00.
The firmware computes these at boot from what it detects (RAM size over fw_cfg, TSEG size
from MCH register 0x50); SMM code uses them as the constants the installer patched in.
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.hw.config import MIB, PlatformConfig

INVALID_APIC_ID = (1 << 64) - 1  # MAX_UINT64 marks an empty CPU_HOT_PLUG_DATA slot / closed gate
TILE_STRIDE = 0x2000  # OVMF tiles SMBASEs 8 KiB apart
BSP_APIC_ID = 0  # QEMU's boot CPU (IA32_APIC_BASE.BSP) is the SMM monarch

# APM_CNT commands the SMM core dispatches on.
APM_CPU_HOTPLUG = 0x04  # QEMU's AML: CPU hot-(un)plug (ICH9_APM_CNT_CPU_HOTPLUG)
APM_FW_READY_TO_LOCK = 0xF0  # firmware-private boot-time SMI (end of DXE / ready to lock)

# Default-SMBASE window contents (FIRST_SMI_HANDLER_CONTEXT at SMM_DEFAULT_SMBASE).
WINDOW_BASE = 0x30000
CTX_GATE = WINDOW_BASE + 0  # u64 ApicIdGate
CTX_NEW_SMBASE = WINDOW_BASE + 8  # u32 NewSmbase
# u8 AboutToLeaveSmm: offset 12 in edk2-stable202211, 21 once master added the feature-control
# fields before it (0e814e829e); see ctx_about_to_leave.
CTX_ABOUT_TO_LEAVE_202211 = WINDOW_BASE + 12
CTX_ABOUT_TO_LEAVE_CURRENT = WINDOW_BASE + 21
FIRST_SMI_HANDLER = WINDOW_BASE + 0x8000  # 0x38000

# Boot-time relocation context, also in the (not yet locked) window.
RELOC_SLOT = WINDOW_BASE + 0x100  # u32: table slot of the CPU being relocated
RELOC_DONE = WINDOW_BASE + 0x104  # u8: set after RSM by fw.reloc_done
RELOC_ORIG_RIP = WINDOW_BASE + 0x108  # saved RIP the SMI interrupted (symbolic)

# Ordinary RAM the firmware uses below 1 MiB at fixed addresses.
AP_PARK = 0x8F000  # where boot APs wait (HLT) after INIT-SIPI-SIPI; SIPI vector 0x8F
RELOC_DONE_CODE = 0x8E000  # fw.reloc_done: runs right after a boot-time relocation RSM
MSR_TRAMPOLINE = 0x9D000  # design smbase-msr: WRMSR SMBASE trampoline page
MSR_MAILBOX = 0x9DF00  # u32 new SMBASE the monarch leaves for the trampoline
MSR_DONE = 0x9DF08  # u8

PAGE = 0x1000
BASE_MEMORY_END = 0xA0000  # QEMU's 640 KiB of base memory; 0xA0000-0xFFFFF is VGA and ROM
FIXED_LOW_PAGES = frozenset({RELOC_DONE_CODE, AP_PARK, MSR_TRAMPOLINE})
PEN_VACATED = 0xFFF  # the pen page's last byte: "I have left SMM" (PostSmmPen.nasm)


def post_smm_pen_page(in_use: frozenset[int] = FIXED_LOW_PAGES) -> int:
    """Where OVMF puts the Post-SMM Pen: SmbaseAllocatePostSmmPen (OvmfPkg/CpuHotplugSmm/
    Smbase.c) allocates one EfiReservedMemoryType page with AllocateMaxAddress 0xFFFFF, i.e. the
    highest free page of the memory map below 1 MiB — the top of base memory unless taken
    (0x9F000 on QEMU, as a recorded hot-add shows)."""
    page = BASE_MEMORY_END - PAGE
    while page in in_use:
        page -= PAGE
    return page


# Scratch RAM for fw_cfg DMA during boot (before the OS exists).
DMA_DESC = 0x6000
DMA_BUF = 0x6100

# What the firmware hands the OS.
HANDOFF = 0x7000
HANDOFF_PMBASE = HANDOFF + 0x00  # u32 FADT PM1a/GPE0 base
HANDOFF_FLAGS = HANDOFF + 0x04  # u8 bit0: CPU hotplug SMI (AML writes 4 to 0xb2); bit1: fw ejects
HANDOFF_E820_COUNT = HANDOFF + 0x08  # u32
HANDOFF_E820 = HANDOFF + 0x10  # 20-byte entries (base u64, length u64, type u32)
HANDOFF_BOOT_CPUS = HANDOFF + 0x200  # u8 count, then one byte per boot APIC ID (MADT)

PMBASE = 0x600  # what OVMF programs into LPC PMBASE (OVMF_PMBASE... 0x600)

# Rendezvous constants (PiSmmCpuDxeSmm MpService.c).
COUNTER_LOCKED = 0xFFFFFFFF  # LockdownSemaphore: the arrival counter once the BSP closed arrival
NO_BSP = 0xFFFFFFFF  # BspIndex when no SMI is in progress
NO_SELECTOR = (1 << 64) - 1  # CPU_EJECT_QEMU_SELECTOR_INVALID: an empty QemuSelectorMap entry


def ctx_about_to_leave(opt) -> int:
    """Address of AboutToLeaveSmm in the first-SMI handler context, for the firmware version."""
    return CTX_ABOUT_TO_LEAVE_CURRENT if opt.current else CTX_ABOUT_TO_LEAVE_202211


@dataclass(frozen=True)
class SmramLayout:
    tseg_base: int
    tseg_size: int
    max_cpus: int

    @property
    def tseg_end(self) -> int:
        return self.tseg_base + self.tseg_size

    # CPU_HOT_PLUG_DATA and the rendezvous state, at the bottom of TSEG.
    @property
    def data(self) -> int:
        return self.tseg_base

    def apic_id_slot(self, i: int) -> int:
        """CPU_HOT_PLUG_DATA.ApicId[i] (u64, INVALID_APIC_ID when free)."""
        return self.tseg_base + 0x100 + 8 * i

    def smbase_slot(self, i: int) -> int:
        """CPU_HOT_PLUG_DATA.SmBase[i] (u64)."""
        return self.tseg_base + 0x500 + 8 * i

    # mSmmMpSyncData (PiSmmCpuDxeSmm): the rendezvous state, indexed by processor number (the
    # CPU_HOT_PLUG_DATA slot, whose SMBASE tile the CPU enters at).
    def present(self, cpu: int) -> int:
        """u8 CpuData[cpu].Present: the CPU takes part in the SMI being handled."""
        return self.tseg_base + 0x900 + cpu

    def run(self, cpu: int) -> int:
        """u32 CpuData[cpu].Run: counting semaphore (APs release the BSP's, the BSP each AP's)."""
        return self.tseg_base + 0xA00 + 4 * cpu

    @property
    def counter(self) -> int:
        """u32 Counter: CPUs checked in to this SMI; COUNTER_LOCKED once arrival is closed."""
        return self.tseg_base + 0xF00

    @property
    def inside_smm(self) -> int:
        """u8 InsideSmm: the BSP is running its handler."""
        return self.tseg_base + 0xF04

    @property
    def all_cpus_in_sync(self) -> int:
        """u8 AllCpusInSync: arrival is closed; cleared as the final release of the SMI."""
        return self.tseg_base + 0xF08

    @property
    def bsp_index(self) -> int:
        """u32 BspIndex: processor number of the elected BSP, NO_BSP between SMIs."""
        return self.tseg_base + 0xF0C

    # CPU_HOT_EJECT_DATA (OvmfPkg/Include/Pcd/CpuHotEjectData.h), kept across SMIs.
    @property
    def post_smm_pen(self) -> int:
        """u32: CpuHotplugSmm's mPostSmmPenAddress, the page the firmware allocated at boot."""
        return self.tseg_base + 0xF18

    @property
    def eject_handler(self) -> int:
        """u64 Handler: EjectCpu while ejects are pending, 0 (NULL) otherwise."""
        return self.tseg_base + 0xF10

    def selector_map(self, cpu: int) -> int:
        """u64 QemuSelectorMap[cpu]: QEMU selector to eject at SMI exit, or NO_SELECTOR."""
        return self.tseg_base + 0x2000 + 8 * cpu

    def tile_of(self, smbase: int) -> int | None:
        """The processor number whose SMBASE tile ``smbase`` is, if it is one."""
        offset = smbase - self.tile_smbase(0)
        if offset < 0 or offset % TILE_STRIDE or offset // TILE_STRIDE >= self.max_cpus:
            return None
        return offset // TILE_STRIDE

    @property
    def smm_core(self) -> int:
        return self.tseg_base + 0x4000

    @property
    def relocation_area(self) -> int:
        return self.tseg_base + 0x10000

    def tile_smbase(self, i: int) -> int:
        return self.relocation_area + i * TILE_STRIDE - 0x8000

    def tile_entry(self, i: int) -> int:
        return self.relocation_area + i * TILE_STRIDE


def smram_layout(cfg: PlatformConfig) -> SmramLayout:
    """TSEG at the top of low RAM, extended TSEG size when QEMU offers it (else 8 MiB)."""
    size = (cfg.ext_tseg_mb or 8) * MIB
    return SmramLayout(cfg.below_4g - size, size, cfg.max_cpus)
