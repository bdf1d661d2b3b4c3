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
CTX_ABOUT_TO_LEAVE = WINDOW_BASE + 21  # u8 AboutToLeaveSmm
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

    def arrived(self, apic_id: int) -> int:
        """Per-APIC-ID rendezvous flag: 1 while the CPU is inside the SMI rendezvous."""
        return self.tseg_base + 0x900 + apic_id

    def victim(self, apic_id: int) -> int:
        """Per-APIC-ID: 1 + QEMU selector of a CPU marked for ejection at SMI exit (0 = none)."""
        return self.tseg_base + 0xA00 + 4 * apic_id

    def parked(self, apic_id: int) -> int:
        """Per-APIC-ID: 1 once a victim has halted itself inside SMM."""
        return self.tseg_base + 0xE00 + apic_id

    @property
    def exit_phase(self) -> int:
        """u32: 0 = collecting, 1 = victims park, 2 = everyone else leaves."""
        return self.tseg_base + 0xF00

    @property
    def post_smm_pen(self) -> int:
        """u32: CpuHotplugSmm's mPostSmmPenAddress, the page the firmware allocated at boot."""
        return self.tseg_base + 0xF08

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
