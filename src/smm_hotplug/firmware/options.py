"""Build options of the firmware image: what each design's firmware does, and its safeguards.

The safeguards of the shipped design are switches so a user can ask "what if the firmware
forgets X" (``check --fw-no-…``).
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.hw.config import SMI_F_ALL

# How the firmware relocates a hot-added CPU.
RELOC_FIRST_SMI = "first-smi"  # SMI + INIT-SIPI-SIPI into the pen; first-SMI handler at 0x38000
RELOC_MSR = "msr"  # INIT-SIPI-SIPI into a trampoline that writes the SMBASE MSR
RELOC_HOTPLUG_REG = "hotplug-reg"  # the VMM already created the CPU with its SMBASE
RELOC_NONE = "none"  # preinit-spares: every slot was relocated at boot


@dataclass(frozen=True)
class FirmwareOptions:
    request_features: int = SMI_F_ALL  # SMI features to negotiate (broadcast|hotplug|unplug)
    lock_window: bool = True  # write 0x02 to MCH 0x9c (SMRAM at default SMBASE)
    lock_smram: bool = True  # set D_LCK in MCH 0x9d
    gate: bool = True  # first-SMI handler waits for its APIC ID at the gate
    relocation: str = RELOC_FIRST_SMI
    relocate_all_slots_at_boot: bool = False  # preinit-spares
    slot_by_selector: bool = False  # hotplug-reg: firmware slot i == hotplug slot i
    reserve_default_smbase: bool = False  # dma-guard: E820 reserves 0x30000-0x3ffff
