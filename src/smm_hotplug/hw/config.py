"""Static platform configuration: what the VMM was told on its command line.

Nothing here changes while the machine runs, so it is kept out of the state value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

from smm_hotplug.errors import UsageError

MIB = 1 << 20

# QEMU pc-q35-7.2 default RAM (-m default) and extended TSEG size (mch.extended-tseg-mbytes).
DEFAULT_RAM_MB = 128
DEFAULT_EXT_TSEG_MB = 16
# QEMU's default x86 CPU type (-cpu qemu64); it names the device in QEMU's refusals.
DEFAULT_CPU_TYPE = "qemu64-x86_64-cpu"

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


# QEMU 7.2 pc-q35-7.2: at most 288 possible CPUs (pc_q35_machine_options); APIC IDs at or above
# 255 need KVM's in-kernel irqchip with the X2APIC API (x86_cpus_init), which the model has not.
MACHINE_MAX_CPUS = 288
MACHINE_NAME = "pc-q35-7.2"
APIC_ID_LIMIT = 255
MODEL_MAX_CPUS = 64  # what the model (firmware tables, bit masks) is built for


class Topology(NamedTuple):
    """An -smp topology: sockets × dies × cores × threads possible CPUs.

    A CPU's *index* is its place in QEMU's possible-CPU list (x86_possible_cpu_arch_ids): the
    ``cpu-index`` of query-cpus-fast and the selector of the ACPI CPU hotplug block.  Its APIC
    ID packs (socket, die, core, thread) into bit fields each as wide as its count needs
    (include/hw/i386/topology.h), so with counts that are not powers of two APIC IDs are sparse.
    """

    sockets: int = 1
    dies: int = 1
    cores: int = 1
    threads: int = 1

    @property
    def slots(self) -> int:
        return self.sockets * self.dies * self.cores * self.threads

    def _widths(self) -> tuple[int, int, int]:
        """(thread, core, die) field widths: apicid_smt_width, _core_width, _die_width."""
        return _bits_for(self.threads), _bits_for(self.cores), _bits_for(self.dies)

    def topo_ids(self, index: int) -> tuple[int, int, int, int]:
        """(socket, die, core, thread) of CPU ``index`` (x86_topo_ids_from_idx)."""
        thread = index % self.threads
        core = index // self.threads % self.cores
        die = index // (self.cores * self.threads) % self.dies
        socket = index // (self.dies * self.cores * self.threads)
        return socket, die, core, thread

    def apic_id_of(self, socket: int, die: int, core: int, thread: int) -> int:
        """x86_apicid_from_topo_ids."""
        tbits, cbits, dbits = self._widths()
        return (socket << (dbits + cbits + tbits)) | (die << (cbits + tbits)) | (core << tbits) | thread

    def apic_id(self, index: int) -> int:
        """APIC ID of CPU ``index`` (x86_apicid_from_cpu_idx)."""
        return self.apic_id_of(*self.topo_ids(index))

    def ids_of_apic(self, apic: int) -> tuple[int, int, int, int]:
        """(socket, die, core, thread) encoded in an APIC ID (x86_topo_ids_from_apicid)."""
        tbits, cbits, dbits = self._widths()
        thread = apic & ((1 << tbits) - 1)
        core = (apic >> tbits) & ((1 << cbits) - 1)
        die = (apic >> (tbits + cbits)) & ((1 << dbits) - 1)
        return apic >> (tbits + cbits + dbits), die, core, thread

    def index_of(self, socket: int, die: int, core: int, thread: int) -> int:
        return ((socket * self.dies + die) * self.cores + core) * self.threads + thread

    @property
    def apic_id_limit(self) -> int:
        """One above the highest APIC ID (x86ms->apic_id_limit; fw_cfg's FW_CFG_MAX_CPUS)."""
        return self.apic_id(self.slots - 1) + 1

    def spec(self) -> str:
        return f"sockets={self.sockets},dies={self.dies},cores={self.cores},threads={self.threads}"


SMP_KEYS = ("cpus", "maxcpus", "sockets", "dies", "clusters", "cores", "threads")


class Smp(NamedTuple):
    cpus: int
    maxcpus: int
    topology: Topology


def _hierarchy(sockets: int, dies: int, cores: int, threads: int) -> str:
    """cpu_hierarchy_to_string for a machine with dies and without clusters (pc)."""
    return f"sockets ({sockets}) * dies ({dies}) * cores ({cores}) * threads ({threads})"


def smp_config(
    given: dict[str, int],
    warn: list[str] | None = None,
    *,
    machine: str = MACHINE_NAME,
    cpu_max: int = MACHINE_MAX_CPUS,
    prefer_sockets: bool = False,
) -> Smp:
    """-smp as QEMU 7.2 completes and checks it (machine_parse_smp_config, then x86_cpus_init's
    APIC ID limit), with QEMU's messages, for ``machine`` (default pc-q35-7.2): its CPU limit,
    and whether it fills in sockets before cores (``prefer_sockets``: machine types before 6.2)
    or cores before sockets.  ``given`` holds the keys the user set; a 0 is deprecated and
    counts as omitted (the warning goes to ``warn``)."""
    for key in given:
        if key not in SMP_KEYS:
            raise UsageError(f"Parameter 'smp.{key}' is unexpected")
    if any(v == 0 for v in given.values()) and warn is not None:
        warn.append(
            "warning: Deprecated CPU topology (considered invalid): "
            "CPU topology parameters must be greater than zero"
        )
    if any(v < 0 for v in given.values()):
        bad = given.get("cpus", given.get("maxcpus", -1))
        raise UsageError(
            f"Invalid SMP CPUs {bad}. The max CPUs supported by machine '{machine}' is {cpu_max}"
        )
    cpus, maxcpus = given.get("cpus", 0), given.get("maxcpus", 0)
    sockets, cores, threads = given.get("sockets", 0), given.get("cores", 0), given.get("threads", 0)
    if given.get("clusters", 0) > 1:
        raise UsageError("clusters not supported by this machine's CPU topology")
    dies = given.get("dies", 0) or 1
    if cpus == 0 and maxcpus == 0:
        sockets, cores, threads = sockets or 1, cores or 1, threads or 1
    else:
        maxcpus = maxcpus or cpus
        if prefer_sockets:  # before 6.2
            if sockets == 0:
                cores, threads = cores or 1, threads or 1
                sockets = maxcpus // (dies * cores * threads)
            elif cores == 0:
                threads = threads or 1
                cores = maxcpus // (sockets * dies * threads)
        elif cores == 0:  # since 6.2
            sockets, threads = sockets or 1, threads or 1
            cores = maxcpus // (sockets * dies * threads)
        elif sockets == 0:
            threads = threads or 1
            sockets = maxcpus // (dies * cores * threads)
        if threads == 0:
            threads = maxcpus // (sockets * dies * cores)
    maxcpus = maxcpus or sockets * dies * cores * threads
    cpus = cpus or maxcpus
    shape = _hierarchy(sockets, dies, cores, threads)
    if sockets * dies * cores * threads != maxcpus:
        raise UsageError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{shape} != maxcpus ({maxcpus})"
        )
    if maxcpus < cpus:
        raise UsageError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"{shape} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
        )
    if maxcpus > cpu_max:
        raise UsageError(
            f"Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine '{machine}' is {cpu_max}"
        )
    topo = Topology(sockets=sockets, dies=dies, cores=cores, threads=threads)
    if topo.apic_id_limit > APIC_ID_LIMIT:
        raise UsageError("current -smp configuration requires kernel irqchip and X2APIC API support.")
    return Smp(cpus, maxcpus, topo)


def smp_values(text: str) -> dict[str, int]:
    """The keys of ``[cpus=]N,maxcpus=M,sockets=S,dies=D,cores=C,threads=T`` as on QEMU's command
    line (a bare first value is ``cpus``; a later key wins over an earlier one)."""
    given: dict[str, int] = {}
    parts = text.split(",")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()  # QEMU accepts one trailing comma
    for i, part in enumerate(parts):
        key, eq, value = part.partition("=")
        if not eq:
            if i:
                raise UsageError(f"-smp {text}: Invalid parameter '{part}'")
            key, value = "cpus", part
        if key not in SMP_KEYS:
            raise UsageError(f"Parameter 'smp.{key}' is unexpected")
        if not value.strip().isdigit():
            raise UsageError(f"Parameter 'smp.{key}' expects integer")
        given[key] = int(value)
    return given


def parse_smp(text: str) -> Smp:
    return smp_config(smp_values(text))


def default_topology(max_cpus: int) -> Topology:
    """What -smp N,maxcpus=M makes of the rest: one socket and die, one thread, M cores."""
    return Topology(cores=max_cpus)


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
    # The AMD HyperTransport hole below 1 TiB in the E820 map (pc_memory_init: an AMD vCPU with
    # 40+ physical address bits on machine types 7.1 and later, e.g. the default qemu64).
    amd_ht_hole: bool = True
    # Historical QEMU fixes, by history-catalog id (designs/history.py; the ids are defined next to
    # the step each one changes: hw/cpuhp.py, hw/lpc.py, hw/mch.py and the AML in guest/acpi.py):
    # ``reverted`` takes out fixes QEMU 7.2 has, ``backported`` puts in later upstream ones it lacks.
    reverted: frozenset[str] = frozenset()
    backported: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlatformConfig:
    boot_cpus: int
    max_cpus: int
    topology: Topology
    ram_mb: int = DEFAULT_RAM_MB
    ext_tseg_mb: int = DEFAULT_EXT_TSEG_MB
    smm: bool = True
    hw: HardwareFeatures = field(default_factory=HardwareFeatures)
    cpu_type: str = DEFAULT_CPU_TYPE

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

    @cached_property
    def _slot_by_apic(self) -> dict[int, int]:
        return {apic: slot for slot, apic in enumerate(self.apic_ids)}

    def slot_of_apic(self, apic_id: int) -> int | None:
        """The CPU index with this APIC ID, if any (x86_find_cpu_slot)."""
        return self._slot_by_apic.get(apic_id)


def platform_config(
    boot_cpus: int,
    max_cpus: int,
    *,
    ram_mb: int = DEFAULT_RAM_MB,
    ext_tseg_mb: int = DEFAULT_EXT_TSEG_MB,
    smm: bool = True,
    hw: HardwareFeatures | None = None,
    topology: Topology | None = None,
    cpu_type: str = DEFAULT_CPU_TYPE,
) -> PlatformConfig:
    """The configuration of ``-smp boot_cpus,maxcpus=max_cpus`` (QEMU's default topology: one
    socket of ``max_cpus`` cores) or of an explicit ``topology`` of ``max_cpus`` CPUs."""
    if boot_cpus < 1:
        raise UsageError(f"boot CPU count must be at least 1 (got {boot_cpus})")
    if max_cpus < boot_cpus:
        raise UsageError(f"maxcpus must be equal to or greater than smp: {max_cpus} < {boot_cpus}")
    if max_cpus > MODEL_MAX_CPUS:
        raise UsageError(f"at most {MODEL_MAX_CPUS} possible CPUs are modelled (got {max_cpus})")
    topo = topology or default_topology(max_cpus)
    if min(topo) < 1:
        raise UsageError(f"CPU topology counts must be positive ({topo.spec()})")
    if topo.slots != max_cpus:
        raise UsageError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{_hierarchy(topo.sockets, topo.dies, topo.cores, topo.threads)} != maxcpus ({max_cpus})"
        )
    if topo.apic_id_limit > APIC_ID_LIMIT:
        raise UsageError("current -smp configuration requires kernel irqchip and X2APIC API support.")
    return PlatformConfig(
        boot_cpus=boot_cpus,
        max_cpus=max_cpus,
        topology=topo,
        ram_mb=ram_mb,
        ext_tseg_mb=ext_tseg_mb,
        smm=smm,
        hw=hw or HardwareFeatures(),
        cpu_type=cpu_type,
    )
