"""Static platform configuration: what the VMM was told on its command line.

Nothing here changes while the machine runs, so it is kept out of the state value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from smm_hotplug.errors import UsageError

MIB = 1 << 20

# QEMU pc-q35-7.2 default RAM (-m default) and extended TSEG size (mch.extended-tseg-mbytes).
DEFAULT_RAM_MB = 128
DEFAULT_EXT_TSEG_MB = 16

# SMI features QEMU offers in etc/smi/supported-features (hw/isa/lpc_ich9.c):
SMI_F_BROADCAST = 1 << 0
SMI_F_CPU_HOTPLUG = 1 << 1
SMI_F_CPU_HOT_UNPLUG = 1 << 2
SMI_F_ALL = SMI_F_BROADCAST | SMI_F_CPU_HOTPLUG | SMI_F_CPU_HOT_UNPLUG

# Accelerator profiles: how the CPUs take SMI, NMI, INIT and SIPI (the rules are hw.apic's).
ACCEL_KVM = "kvm"  # Linux 6.1 KVM, in-kernel irqchip (QEMU 7.2's default for pc-q35-7.2)
ACCEL_TCG = "tcg"  # QEMU 7.2.22's TCG (Debian bookworm's build)
ACCELS = (ACCEL_KVM, ACCEL_TCG)


def _bits_for(count: int) -> int:
    """Width of an APIC ID sub-field holding ``count`` values (QEMU apicid_bitwidth_for_count)."""
    return max(0, (count - 1).bit_length())


@dataclass(frozen=True)
class Topology:
    """-smp topology.  CPU index i = socket*cores*threads + core*threads + thread."""

    sockets: int
    cores: int
    threads: int

    @property
    def slots(self) -> int:
        return self.sockets * self.cores * self.threads

    def ids(self, index: int) -> tuple[int, int, int]:
        """(socket-id, core-id, thread-id) of CPU slot ``index``."""
        thread = index % self.threads
        core = (index // self.threads) % self.cores
        socket = index // (self.threads * self.cores)
        return socket, core, thread

    def apic_id(self, index: int) -> int:
        """x86 APIC ID of a slot: socket | core | thread bit fields (QEMU x86_apicid_from_topo_ids)."""
        socket, core, thread = self.ids(index)
        tbits = _bits_for(self.threads)
        cbits = _bits_for(self.cores)
        return (socket << (cbits + tbits)) | (core << tbits) | thread

    def ids_of_apic(self, apic: int) -> tuple[int, int, int]:
        """(socket-id, core-id, thread-id) encoded in an APIC ID (inverse of ``apic_id``)."""
        tbits = _bits_for(self.threads)
        cbits = _bits_for(self.cores)
        return apic >> (cbits + tbits), (apic >> tbits) & ((1 << cbits) - 1), apic & ((1 << tbits) - 1)

    def index_of(self, socket: int, core: int, thread: int) -> int:
        return (socket * self.cores + core) * self.threads + thread


def make_topology(
    max_cpus: int, sockets: int | None = None, cores: int | None = None, threads: int | None = None
) -> Topology:
    """Fill in an -smp topology the way QEMU 7.2 does for pc-q35-7.2 (prefers cores)."""
    threads = threads or 1
    if sockets is None and cores is None:
        sockets, cores = 1, max(1, max_cpus // threads)
    elif sockets is None:
        assert cores is not None
        sockets = max(1, max_cpus // (cores * threads))
    elif cores is None:
        cores = max(1, max_cpus // (sockets * threads))
    topo = Topology(sockets, cores, threads)
    if topo.slots != max_cpus:
        raise UsageError(
            f"Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"sockets ({sockets}) * cores ({cores}) * threads ({threads}) != maxcpus ({max_cpus})"
        )
    return topo


@dataclass(frozen=True)
class HardwareFeatures:
    """Chipset/CPU/VMM features that differ between the designs of the 2019 discussion."""

    # QEMU 5.1+ "SMRAM at default SMBASE" (MCH register 0x9c).
    smbase_window: bool = True
    # A chipset guard that blocks DMA to 0x30000-0x3FFFF (design "dma-guard").
    dma_guard_default_smbase: bool = False
    # An SMBASE MSR that non-SMM code can write (design "smbase-msr").
    smbase_msr_writable: bool = False
    # Per-slot SMBASE registers in the hotplug controller, writable only from SMM; the VMM
    # creates a hot-added CPU with that SMBASE (design "hotplug-smbase-reg").
    hotplug_smbase_regs: bool = False
    # The VMM gives a re-added CPU the SMBASE its slot had before (design "preinit-spares").
    vmm_keeps_smbase: bool = False
    # All possible CPUs exist at power-on; the spares are removed after firmware boot.
    all_cpus_at_boot: bool = False
    # The accelerator whose CPU rules apply (ACCEL_KVM or ACCEL_TCG; hw.apic).
    accel: str = ACCEL_KVM
    # SMI features QEMU offers over fw_cfg.
    supported_smi_features: int = SMI_F_ALL


@dataclass(frozen=True)
class PlatformConfig:
    boot_cpus: int
    max_cpus: int
    topology: Topology
    ram_mb: int = DEFAULT_RAM_MB
    ext_tseg_mb: int = DEFAULT_EXT_TSEG_MB
    smm: bool = True
    hw: HardwareFeatures = field(default_factory=HardwareFeatures)

    @cached_property
    def ram_bytes(self) -> int:
        return self.ram_mb * MIB

    @cached_property
    def below_4g(self) -> int:
        """Low RAM size (pc_q35_init: lowmem is 0xb0000000 unless RAM >= 0xb0000000)."""
        lowmem = 0x80000000 if self.ram_bytes >= 0xB0000000 else 0xB0000000
        return min(self.ram_bytes, lowmem)

    @cached_property
    def above_4g(self) -> int:
        return self.ram_bytes - self.below_4g

    @cached_property
    def apic_ids(self) -> tuple[int, ...]:
        return tuple(self.topology.apic_id(s) for s in range(self.max_cpus))

    def apic_id(self, slot: int) -> int:
        return self.apic_ids[slot]

    def slot_of_apic(self, apic_id: int) -> int | None:
        for slot in range(self.max_cpus):
            if self.topology.apic_id(slot) == apic_id:
                return slot
        return None


def platform_config(
    boot_cpus: int,
    max_cpus: int,
    *,
    ram_mb: int = DEFAULT_RAM_MB,
    ext_tseg_mb: int = DEFAULT_EXT_TSEG_MB,
    smm: bool = True,
    hw: HardwareFeatures | None = None,
    sockets: int | None = None,
    cores: int | None = None,
    threads: int | None = None,
) -> PlatformConfig:
    if boot_cpus < 1:
        raise UsageError(f"boot CPU count must be at least 1 (got {boot_cpus})")
    if max_cpus < boot_cpus:
        raise UsageError(f"maxcpus must be equal to or greater than smp: {max_cpus} < {boot_cpus}")
    if max_cpus > 64:
        raise UsageError(f"at most 64 possible CPUs are modelled (got {max_cpus})")
    topo = make_topology(max_cpus, sockets, cores, threads)
    return PlatformConfig(
        boot_cpus=boot_cpus,
        max_cpus=max_cpus,
        topology=topo,
        ram_mb=ram_mb,
        ext_tseg_mb=ext_tseg_mb,
        smm=smm,
        hw=hw or HardwareFeatures(),
    )
