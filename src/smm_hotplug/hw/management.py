"""The management side of the VMM: plug a CPU into a slot, request its unplug.

These are what QMP ``device_add``/``device_del`` do for a CPU in QEMU 7.2 (hw/i386/x86.c,
hw/acpi/cpu.c, hw/acpi/ich9.c), including the refusals and their messages.  An unplug request
only raises the event: the CPU disappears when it is ejected through the hotplug block.
"""

from __future__ import annotations

from smm_hotplug.hw import apic, cpuhp, lpc, machine
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import DEFAULT_SMBASE, hot_added_cpu
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log


class Refused(Exception):
    """A request QEMU refuses; ``str()`` is QEMU's message, ``klass`` its QMP error class."""

    def __init__(self, message: str, klass: str = "GenericError") -> None:
        super().__init__(message)
        self.klass = klass


def plug_check(plat: Board, m: Machine, slot: int) -> None:
    """What QEMU checks before creating a CPU, in QEMU's order."""
    refusal = lpc.plug_refusal(m.lpc, plat.cfg.hw.reverted)
    if refusal:
        raise Refused(refusal)
    cfg = plat.cfg
    if not 0 <= slot < cfg.max_cpus:
        raise Refused(f"CPU slot {slot} is not in range 0:{cfg.max_cpus - 1}")
    if m.cpus[slot].present:
        raise Refused(f"CPU[{slot}] with APIC ID {cfg.apic_id(slot)} exists")


def plug(plat: Board, m: Machine, slot: int, log: Log, actor: str = "mgmt") -> Machine:
    """device_add: a new CPU, waiting for SIPI, an insert event and the GPE."""
    plug_check(plat, m, slot)
    hw = plat.cfg.hw
    smbase = DEFAULT_SMBASE
    if hw.hotplug_smbase_regs and m.cpuhp.modern and m.cpuhp.smbase_regs[slot]:
        smbase = m.cpuhp.smbase_regs[slot]
    elif hw.vmm_keeps_smbase and m.kept_smbase and m.kept_smbase[slot]:
        smbase = m.kept_smbase[slot]
    m = set_cpu(m, slot, hot_added_cpu(smbase, apic.fresh_ap_uninit(plat)))
    m = m._replace(cpuhp=cpuhp.plug_cb(m.cpuhp, slot), lpc=lpc.raise_gpe(m.lpc, lpc.GPE0_CPU_HOTPLUG))
    log.add(
        "mgmt",
        actor,
        f"device_add: cpu{slot} plugged (APIC ID {plat.cfg.apic_id(slot)}, "
        f"SMBASE 0x{smbase:x}); insert event, GPE raised",
    )
    return m


def unplug_check(plat: Board, m: Machine, slot: int) -> None:
    refusal = lpc.unplug_refusal(m.lpc, m.cpuhp.modern, plat.cfg.cpu_type, plat.cfg.hw.reverted)
    if refusal:
        raise Refused(refusal)
    if not 0 <= slot < plat.cfg.max_cpus or not m.cpus[slot].present:
        raise Refused(f"Device 'cpu{slot}' not found", "DeviceNotFound")
    if slot == 0:
        raise Refused("Boot CPU is unpluggable")


def unplug_request(plat: Board, m: Machine, slot: int, log: Log, actor: str = "mgmt") -> Machine:
    """device_del: a remove event and the GPE; the guest decides when it is ejected."""
    unplug_check(plat, m, slot)
    hp = cpuhp.unplug_request_cb(m.cpuhp, slot)
    m = m._replace(cpuhp=hp, lpc=lpc.raise_gpe(m.lpc, lpc.GPE0_CPU_HOTPLUG))
    log.add("mgmt", actor, f"device_del: unplug of cpu{slot} requested; remove event, GPE raised")
    return m


def remove_now(plat: Board, m: Machine, slot: int, log: Log, actor: str = "mgmt") -> Machine:
    """The VMM destroys a CPU without guest involvement (preinit-spares: spare slots)."""
    log.add("mgmt", actor, f"VMM removes spare cpu{slot} (SMBASE 0x{m.cpus[slot].smbase:x})")
    return machine.remove_cpu(plat, m, slot)
