"""The designs weighed in the 2019 edk2-devel/qemu-devel discussion, as configurations.

Each design is hardware features (what QEMU/the chipset/the VMM provide) plus firmware build
options (what the firmware does) on the one model — see ../shared/reference/design-space.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from smm_hotplug.errors import UsageError
from smm_hotplug.firmware.options import (
    FIRMWARE_VERSIONS,
    RELOC_FIRST_SMI,
    RELOC_HOTPLUG_REG,
    RELOC_MSR,
    RELOC_NONE,
    FirmwareOptions,
)
from smm_hotplug.hw.config import ACCELS, SMI_F_ALL, HardwareFeatures


@dataclass(frozen=True)
class Design:
    id: str
    summary: str
    hw: HardwareFeatures = field(default_factory=HardwareFeatures)
    fw: FirmwareOptions = field(default_factory=FirmwareOptions)

    @property
    def reverted(self) -> tuple[str, ...]:
        """The historical fixes taken out of this design's QEMU and firmware (designs/history.py)."""
        return tuple(sorted(self.hw.reverted | self.fw.reverted))

    @property
    def backported(self) -> tuple[str, ...]:
        """Later upstream fixes put into this design's QEMU 7.2."""
        return tuple(sorted(self.hw.backported))


DESIGNS: dict[str, Design] = {
    d.id: d
    for d in (
        Design(
            "sdm",
            "real-hardware method: the first SMI runs at 0x38000 in ordinary RAM and relocates "
            "SMBASE into TSEG; nothing protects the default SMBASE area",
            hw=HardwareFeatures(smbase_window=False),
        ),
        Design(
            "dma-guard",
            "sdm plus a chipset guard blocking DMA to 0x30000-0x3FFFF, reserved in the memory map",
            hw=HardwareFeatures(smbase_window=False, dma_guard_default_smbase=True),
            fw=FirmwareOptions(reserve_default_smbase=True),
        ),
        Design(
            "smbase-msr",
            "an SMBASE MSR writable outside SMM: a firmware trampoline sets the new CPU's "
            "SMBASE before its first SMI",
            hw=HardwareFeatures(smbase_window=False, smbase_msr_writable=True),
            fw=FirmwareOptions(relocation=RELOC_MSR),
        ),
        Design(
            "preinit-spares",
            "firmware relocates every possible CPU at boot, the spares are removed, and a "
            "later hot-add of a spare slot is trusted to keep its SMBASE",
            hw=HardwareFeatures(smbase_window=False, all_cpus_at_boot=True),
            fw=FirmwareOptions(relocation=RELOC_NONE, relocate_all_slots_at_boot=True, slot_by_selector=True),
        ),
        Design(
            "hotplug-smbase-reg",
            "the hotplug controller has per-slot SMBASE registers only SMM can write; the VMM "
            "creates a hot-added CPU with that SMBASE",
            hw=HardwareFeatures(smbase_window=False, hotplug_smbase_regs=True),
            fw=FirmwareOptions(relocation=RELOC_HOTPLUG_REG, slot_by_selector=True),
        ),
        Design(
            "smram-default-smbase",
            "shipped by QEMU 5.1 + edk2-stable202008: the default-SMBASE window is lockable "
            "SMRAM, hotplug SMIs are broadcast, new CPUs are relocated behind a gate and penned",
            fw=FirmwareOptions(relocation=RELOC_FIRST_SMI),
        ),
    )
}

DEFAULT_DESIGN = "smram-default-smbase"


def get_design(design_id: str) -> Design:
    try:
        return DESIGNS[design_id]
    except KeyError:
        raise UsageError(f"unknown design '{design_id}' (known: {', '.join(DESIGNS)})") from None


def with_options(
    design: Design,
    *,
    accel: str | None = None,
    vmm_keeps_smbase: bool | None = None,
    no_window_lock: bool = False,
    no_smram_lock: bool = False,
    no_gate: bool = False,
    no_broadcast: bool = False,
    firmware: str | None = None,
    smi_features: int | None = None,
) -> Design:
    """The design with a platform option changed, a firmware safeguard turned off, the firmware
    built as another edk2 version (``firmware``, one of FIRMWARE_VERSIONS) or requesting other
    SMI features (``smi_features``, the bits of etc/smi/requested-features)."""
    hw, fw = design.hw, design.fw
    if firmware is not None:
        if firmware not in FIRMWARE_VERSIONS:
            raise UsageError(f"unknown firmware '{firmware}' (known: {', '.join(FIRMWARE_VERSIONS)})")
        fw = replace(fw, version=firmware)
    if accel is not None:
        if accel not in ACCELS:
            raise UsageError(f"unknown accelerator '{accel}' (known: {', '.join(ACCELS)})")
        hw = replace(hw, accel=accel)
    if vmm_keeps_smbase is not None:
        hw = replace(hw, vmm_keeps_smbase=vmm_keeps_smbase)
    if no_window_lock:
        fw = replace(fw, lock_window=False)
    if no_smram_lock:
        fw = replace(fw, lock_smram=False)
    if no_gate:
        fw = replace(fw, gate=False)
    if smi_features is not None:
        if not 0 <= smi_features <= SMI_F_ALL:
            raise UsageError(
                f"SMI features must be a mask of broadcast (1), CPU hotplug (2) and hot-unplug (4), "
                f"0-{SMI_F_ALL} (got {smi_features})"
            )
        fw = replace(fw, request_features=smi_features)
    if no_broadcast:
        fw = replace(fw, request_features=0)
    return replace(design, hw=hw, fw=fw)
