"""The hardware's whole state as one immutable, hashable value.

``Machine`` holds everything of the virtual platform that changes while it runs: the CPUs, the
state of each device (MCH, ICH9 LPC, fw_cfg, the CPU hotplug block), the PCI host bridge's
address register and RAM — plus bookkeeping that is not hardware: the address ranges the
firmware has declared SMRAM and the CPUs whose removal the OS asked for (ghost state the
invariants read), and what a VMM that keeps SMBASE across unplug remembers per slot.
Everything static lives in ``hw.board.Board``.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.cpu import Cpu
from smm_hotplug.hw.cpuhp import CpuHp
from smm_hotplug.hw.fw_cfg import FwCfg
from smm_hotplug.hw.lpc import Lpc
from smm_hotplug.hw.mch import Mch
from smm_hotplug.hw.memory import Memory


class Machine(NamedTuple):
    cpus: tuple[Cpu, ...]
    mch: Mch
    lpc: Lpc
    fwcfg: FwCfg
    cpuhp: CpuHp
    pci_addr: int  # CONFIG_ADDRESS of the PCI host bridge (hw.pci_host)
    mem: Memory
    # Ghost state for the invariants: address ranges the firmware keeps SMM code/data in.
    smram_claims: tuple[tuple[int, int], ...] = ()
    # VMM memory of each slot's last SMBASE (only with HardwareFeatures.vmm_keeps_smbase).
    kept_smbase: tuple[int, ...] = ()
    # Ghost state for eject-safe: slots whose removal the OS asked for (its _EJ0 set the
    # firmware-remove bit, or it wrote the eject itself) since the CPU there was plugged.
    removal_asked: int = 0


def set_cpu(m: Machine, slot: int, c: Cpu) -> Machine:
    """``m`` with the CPU in ``slot`` replaced (as ``_replace``, but faster on the hot path)."""
    cpus = m.cpus
    return Machine._make(((*cpus[:slot], c, *cpus[slot + 1 :]), *m[1:]))


def present_mask(m: Machine) -> int:
    """Bit per slot that holds a CPU."""
    mask = 0
    for slot, c in enumerate(m.cpus):
        if c.mode:
            mask |= 1 << slot
    return mask
