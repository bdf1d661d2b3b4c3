"""Live migration as QEMU 7.2 does it: the machine saved on a source and restored on a destination.

The destination is started with the same command line and the same CPUs, and reset
(``machine.power_on``); then each device loads what its vmstate carries and runs its post-load
hook — both declared next to the device (``VMSTATE`` in hw.mch, hw.lpc, hw.fw_cfg, hw.cpuhp,
hw.pci_host, hw.cpu) — and RAM, TSEG included, travels whole.  The VM is stopped between two
instructions, so ``migrate`` is one atomic, pure step.

What it changes is exactly what QEMU 7.2 loses or recomputes (../notes/migration.md): the MCH's
0x9c write mask is not migrated, so the post-load discards the default-SMBASE window's lock
(0x9c reads 0 again and the window is ordinary RAM for everyone until a new query), and the CPU
hotplug block's firmware-remove bits are not migrated, so a removal the firmware has not yet
collected is lost.  Everything else the model keeps is carried exactly.
"""

from __future__ import annotations

from typing import Any

from smm_hotplug.hw import cpu, cpuhp, fw_cfg, lpc, machine, mch, pci_host, vmstate
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import Cpu
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log

# Machine field -> the vmstate of the device whose state it is.
DEVICES: dict[str, vmstate.Vmstate] = {
    "mch": mch.VMSTATE,
    "lpc": lpc.VMSTATE,
    "fwcfg": fw_cfg.VMSTATE,
    "cpuhp": cpuhp.VMSTATE,
    "pci_addr": pci_host.VMSTATE,
}


def migrate(board: Board, m: Machine, log: Log, actor: str = "mgmt") -> Machine:
    """The machine as the destination QEMU 7.2 has it once the migration completed."""
    cfg = board.cfg
    dest = machine.power_on(board)
    devices = {
        name: vmstate.load(vm, getattr(dest, name), getattr(m, name), cfg) for name, vm in DEVICES.items()
    }
    # The destination creates the same CPUs (-device for each hot-added one); each loads its state.
    cpus = tuple(vmstate.load(cpu.VMSTATE, Cpu(), c, cfg) if c.present else Cpu() for c in m.cpus)
    # RAM travels whole.  The other fields are not hardware: the ghost state of the invariants
    # (what the firmware declared SMRAM, whose removal the OS asked for) and what a VMM that
    # keeps SMBASE across unplug remembers (its own migration stream).
    out = dest._replace(
        cpus=cpus,
        mem=m.mem,
        smram_claims=m.smram_claims,
        removal_asked=m.removal_asked,
        kept_smbase=m.kept_smbase,
        **devices,
    )
    log.add(
        "mgmt",
        actor,
        "migrate: the VM is saved and restored on a destination QEMU 7.2 (" + _summary(m, out) + ")",
    )
    for name in DEVICES:
        for field, before, after in _differences(getattr(m, name), getattr(out, name)):
            log.add("mgmt", actor, f"migrate: {name}.{field} {before} -> {after}", detail=True)
    return out


def _summary(before: Machine, after: Machine) -> str:
    parts = []
    if mch.window_locked(before.mch) and not mch.window_locked(after.mch):
        parts.append(
            "the default-SMBASE window is no longer locked SMRAM: MCH 0x9c reads 0x00 with write mask 0xff"
        )
    elif before.mch.f_smbase != after.mch.f_smbase:
        parts.append(f"MCH 0x9c 0x{before.mch.f_smbase:02x} discarded: the window can no longer be locked")
    lost = before.cpuhp.fw_remove & ~after.cpuhp.fw_remove
    if lost:
        slots = [s for s in range(len(before.cpus)) if lost >> s & 1]
        parts.append("firmware-remove request lost for selector " + ", ".join(map(str, slots)))
    return "; ".join(parts) or "nothing the guest can see changed"


def _differences(before: Any, after: Any) -> list[tuple[str, str, str]]:
    if before == after:
        return []
    if not hasattr(before, "_fields"):
        return [("value", _fmt(before), _fmt(after))]
    return [
        (f, _fmt(getattr(before, f)), _fmt(getattr(after, f)))
        for f in before._fields
        if getattr(before, f) != getattr(after, f)
    ]


def _fmt(value: Any) -> str:
    return f"0x{value:x}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)
