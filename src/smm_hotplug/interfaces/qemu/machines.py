"""The machine types and CPU models the endpoint offers, as QEMU 7.2 names and describes them.

Every versioned q35 machine type of QEMU 7.2 is offered; what differs between them and matters to
the model is taken from QEMU's compat property tables (hw/i386/pc.c, pc_compat_*): the default-SMBASE
SMRAM window (``mch.smbase-smram``, from pc-q35-5.0), the SMI features offered over fw_cfg
(``x-smi-broadcast`` from 2.9, ``x-smi-cpu-hotplug`` from 5.2, ``x-smi-cpu-hotunplug`` from 6.0)
and the default extended TSEG size (``mch.extended-tseg-mbytes``, 16 MiB from 2.10).  The machine
``none`` has no devices and no CPU.  The i440fx, isapc and microvm machines are not modelled and
are not offered, as a QEMU built without them would not offer them.
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.hw.config import SMI_F_BROADCAST, SMI_F_CPU_HOT_UNPLUG, SMI_F_CPU_HOTPLUG

NONE = "none"
Q35_ALIAS = "q35"
Q35_LATEST = "pc-q35-7.2"

# The order in which QEMU 7.2's query-machines lists these types (its type table is a hash table;
# measured on Debian's 1:7.2+dfsg-7+deb12u18, the other machine types left out).
QUERY_ORDER = (
    "pc-q35-5.2", "pc-q35-4.2", "pc-q35-2.7", "pc-q35-7.1", "none", "pc-q35-6.1", "pc-q35-2.4",
    "pc-q35-2.10", "pc-q35-5.1", "pc-q35-2.9", "pc-q35-3.1", "pc-q35-4.1", "pc-q35-2.6",
    "pc-q35-2.12", "pc-q35-7.0", "pc-q35-6.0", "pc-q35-4.0.1", "pc-q35-5.0", "pc-q35-2.8",
    "pc-q35-3.0", "pc-q35-7.2", "pc-q35-4.0", "pc-q35-6.2", "pc-q35-2.5", "pc-q35-2.11",
)  # fmt: skip

# x86 CPU models of QEMU 7.2 (`qemu-system-x86_64 -cpu help`); the QOM type is MODEL-x86_64-cpu.
CPU_MODELS = frozenset(
    """
    486 486-v1 Broadwell Broadwell-IBRS Broadwell-noTSX Broadwell-noTSX-IBRS Broadwell-v1 Broadwell-v2
    Broadwell-v3 Broadwell-v4 Cascadelake-Server Cascadelake-Server-noTSX Cascadelake-Server-v1
    Cascadelake-Server-v2 Cascadelake-Server-v3 Cascadelake-Server-v4 Cascadelake-Server-v5 Conroe
    Conroe-v1 Cooperlake Cooperlake-v1 Cooperlake-v2 Denverton Denverton-v1 Denverton-v2
    Denverton-v3 Dhyana Dhyana-v1 Dhyana-v2 EPYC EPYC-IBPB EPYC-Milan EPYC-Milan-v1 EPYC-Rome
    EPYC-Rome-v1 EPYC-Rome-v2 EPYC-v1 EPYC-v2 EPYC-v3 Haswell Haswell-IBRS Haswell-noTSX
    Haswell-noTSX-IBRS Haswell-v1 Haswell-v2 Haswell-v3 Haswell-v4 Icelake-Server
    Icelake-Server-noTSX Icelake-Server-v1 Icelake-Server-v2 Icelake-Server-v3 Icelake-Server-v4
    Icelake-Server-v5 Icelake-Server-v6 IvyBridge IvyBridge-IBRS IvyBridge-v1 IvyBridge-v2
    KnightsMill KnightsMill-v1 Nehalem Nehalem-IBRS Nehalem-v1 Nehalem-v2 Opteron_G1 Opteron_G1-v1
    Opteron_G2 Opteron_G2-v1 Opteron_G3 Opteron_G3-v1 Opteron_G4 Opteron_G4-v1 Opteron_G5
    Opteron_G5-v1 Penryn Penryn-v1 SandyBridge SandyBridge-IBRS SandyBridge-v1 SandyBridge-v2
    Skylake-Client Skylake-Client-IBRS Skylake-Client-noTSX-IBRS Skylake-Client-v1
    Skylake-Client-v2 Skylake-Client-v3 Skylake-Client-v4 Skylake-Server Skylake-Server-IBRS
    Skylake-Server-noTSX-IBRS Skylake-Server-v1 Skylake-Server-v2 Skylake-Server-v3
    Skylake-Server-v4 Skylake-Server-v5 Snowridge Snowridge-v1 Snowridge-v2 Snowridge-v3
    Snowridge-v4 Westmere Westmere-IBRS Westmere-v1 Westmere-v2 athlon athlon-v1 core2duo
    core2duo-v1 coreduo coreduo-v1 kvm32 kvm32-v1 kvm64 kvm64-v1 n270 n270-v1 pentium pentium-v1
    pentium2 pentium2-v1 pentium3 pentium3-v1 phenom phenom-v1 qemu32 qemu32-v1 qemu64 qemu64-v1
    base max
    """.split()  # noqa: SIM905 - a list of 130 names reads better as words
)
# Models with an AMD vendor and 40 or more physical address bits, whose E820 map gets the AMD
# HyperTransport hole on machine types 7.1 and later (pc_memory_init; measured on Debian's QEMU 7.2:
# etc/e820 holds two entries with these models, one with the others).
AMD_HT_HOLE_MODELS = frozenset(
    {"qemu64", "qemu64-v1", "phenom", "phenom-v1", "max"}
    | {m for m in CPU_MODELS if m.startswith(("EPYC", "Opteron_G"))}
)
DEFAULT_CPU_MODEL = "qemu64"
CPU_TYPE_SUFFIX = "-x86_64-cpu"


def cpu_type(model: str) -> str:
    return model + CPU_TYPE_SUFFIX


@dataclass(frozen=True)
class MachineType:
    name: str
    version: tuple[int, ...]  # () for "none"

    @property
    def is_none(self) -> bool:
        return self.name == NONE

    def since(self, *version: int) -> bool:
        """True when this machine type is at least ``version`` (compat properties not applied)."""
        return self.version >= version

    @property
    def smbase_window(self) -> bool:
        return self.since(5, 0)  # pc_compat_4_2: mch.smbase-smram=off

    @property
    def smi_features(self) -> int:
        features = 0
        if self.since(2, 9):  # pc_compat_2_8: x-smi-broadcast=off
            features |= SMI_F_BROADCAST
        if self.since(5, 2):  # pc_compat_5_1: x-smi-cpu-hotplug=off
            features |= SMI_F_CPU_HOTPLUG
        if self.since(6, 0):  # pc_compat_5_2: x-smi-cpu-hotunplug=off
            features |= SMI_F_CPU_HOT_UNPLUG
        return features

    @property
    def ext_tseg_mb(self) -> int:
        return 16 if self.since(2, 10) else 0  # pc_compat_2_9: mch.extended-tseg-mbytes=0

    def amd_ht_hole(self, cpu_model: str) -> bool:
        """pc_q35_7_0_machine_options: enforce_amd_1tb_hole = false."""
        return self.since(7, 1) and cpu_model in AMD_HT_HOLE_MODELS

    @property
    def prefer_sockets(self) -> bool:
        """-smp fills in sockets before cores (pc_q35_6_1_machine_options: prefer_sockets)."""
        return not self.since(6, 2)

    @property
    def cpu_max(self) -> int:
        if self.is_none:
            return 1
        return 288 if self.since(2, 8) else 255  # pc_q35_2_7_machine_options: max_cpus = 255

    def query_entry(self) -> dict:
        """This machine's entry in query-machines (members in QAPI schema order)."""
        entry: dict = {"name": self.name}
        if self.name == Q35_LATEST:
            entry["alias"] = Q35_ALIAS
        entry["cpu-max"] = self.cpu_max
        entry["hotpluggable-cpus"] = not self.is_none
        # pc_q35_5_0_machine_options and older: numa_mem_supported = true
        entry["numa-mem-supported"] = not self.is_none and not self.since(5, 1)
        entry["deprecated"] = False
        if not self.is_none:
            entry["default-cpu-type"] = cpu_type(DEFAULT_CPU_MODEL)
        entry["default-ram-id"] = "ram" if self.is_none else "pc.ram"
        return entry


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.removeprefix("pc-q35-").split("."))


MACHINES = {name: MachineType(name, () if name == NONE else _version(name)) for name in QUERY_ORDER}


def lookup(name: str) -> MachineType | None:
    """A machine type by name or alias."""
    return MACHINES.get(Q35_LATEST if name == Q35_ALIAS else name)
