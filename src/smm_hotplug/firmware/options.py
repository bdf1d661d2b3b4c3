"""Build options of the firmware image: what each design's firmware does, and its safeguards.

The safeguards of the shipped design are switches so a user can ask "what if the firmware
forgets X" (``check --fw-no-…``).  ``version`` selects the edk2 revision whose SMI
synchronisation and hot-eject logic the firmware follows (``check --firmware``):

* ``edk2-stable202211`` (tag ``fff6d81270``, the OVMF of the recorded real hot-add): the APs
  report "ready to reset" and "ready to exit" in two rounds at SMI exit (PiSmmCpuDxeSmm
  MpService.c BSPHandler/APHandler); non-ejected APs leave SMM while the BSP is still writing
  the ejects (CpuHotplugSmm EjectCpu); AboutToLeaveSmm sits at offset 12 of the first-SMI
  context (FirstSmiHandlerContext.h).
* ``edk2-current`` (master ``c5aa7e7d94``): one exit round for OVMF (``58d9463939``, 2023-12);
  a non-ejected AP waits in EjectCpu until the BSP has written every eject (``121af960e2``
  "delay SMM exit", 2024-09); a check-out on a locked arrival counter is refused (SmmCpuSyncLib,
  ``a83d953dc2``); AboutToLeaveSmm moved to offset 21 (``0e814e829e``, 2025-07).
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.hw.config import SMI_F_ALL

# How the firmware relocates a hot-added CPU.
RELOC_FIRST_SMI = "first-smi"  # SMI + INIT-SIPI-SIPI into the pen; first-SMI handler at 0x38000
RELOC_MSR = "msr"  # INIT-SIPI-SIPI into a trampoline that writes the SMBASE MSR
RELOC_HOTPLUG_REG = "hotplug-reg"  # the VMM already created the CPU with its SMBASE
RELOC_NONE = "none"  # preinit-spares: every slot was relocated at boot

EDK2_STABLE202211 = "edk2-stable202211"
EDK2_CURRENT = "edk2-current"
FIRMWARE_VERSIONS = (EDK2_STABLE202211, EDK2_CURRENT)
DEFAULT_FIRMWARE = EDK2_STABLE202211

# Historical edk2 fixes a firmware step can revert (``FirmwareOptions.reverted``), by
# history-catalog id (designs/history.py tells each one's story; the step that reads it says
# what it did before):
FIX_SKIP_KNOWN_APIC_ID = "edk2-020bb4b46d"  # cpu_hotplug._add_next: skip an APIC ID already known
FIX_DIRECTED_SMI = "edk2-cbccf99592"  # cpu_hotplug._rel_pen/_rel_smi: SMI before INIT-SIPI-SIPI
FIX_COLLECT_FW_REMOVE = "edk2-a752dd0746"  # cpu_hotplug._hp_status: unplug on fw_remove, not remove
FIX_NEGOTIATE_SMI_FEATURES = "edk2-fe89a63da4"  # boot._smi_supported: negotiate on this boot path
FIX_DELAY_SMM_EXIT = "edk2-121af960e2"  # smm_core._ap_exit: APs stay until every eject is written
EDK2_FIXES = (
    FIX_SKIP_KNOWN_APIC_ID,
    FIX_DIRECTED_SMI,
    FIX_COLLECT_FW_REMOVE,
    FIX_NEGOTIATE_SMI_FEATURES,
    FIX_DELAY_SMM_EXIT,
)
# Fixes a version does not have: 121af960e2 is first in edk2-stable202411.
MISSING_FIXES: dict[str, frozenset[str]] = {
    EDK2_STABLE202211: frozenset({FIX_DELAY_SMM_EXIT}),
    EDK2_CURRENT: frozenset(),
}


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
    version: str = DEFAULT_FIRMWARE  # which edk2 the SMI rendezvous and eject follow
    reverted: frozenset[str] = frozenset()  # EDK2_FIXES taken out again (the bug put back)

    @property
    def current(self) -> bool:
        """The firmware has the post-202211 changes (see the module docstring)."""
        return self.version == EDK2_CURRENT

    def has_fix(self, fix: str) -> bool:
        """The firmware has edk2 fix ``fix``: its version has it and it is not reverted."""
        return fix not in self.reverted and fix not in MISSING_FIXES.get(self.version, frozenset())
