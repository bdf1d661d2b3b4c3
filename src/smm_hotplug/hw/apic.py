"""The interrupt controller: local APIC IPIs, the SMI line, and what a CPU takes when.

Two halves.  *Delivery* (``send_ipi``, ``deliver``, ``raise_smi``): an IPI or an SMI reaches a
CPU and is latched, acted on at once, or dropped, depending on the CPU's state.  *Acceptance*
(``pending``, ``acknowledge``): of what a CPU has latched, which event it takes at its next
step — INIT, SMI, or an external interrupt (fixed IPIs, and the ACPI SCI that the modelled
IOAPIC routes to the BSP).  The CPU core (hw.core) performs what is taken.

Rules (hardware/KVM-like; ``HardwareFeatures.init_in_smm`` switches INIT-in-SMM to QEMU TCG's):
an SMI is latched (several collapse into one) and taken outside SMM, also by a halted CPU and
by a CPU started later (a waiting-for-SIPI CPU keeps it); INIT outside SMM puts the CPU into
wait-for-SIPI at once, in SMM it is held until RSM (or, TCG, resets the CPU out of SMM at once
and drops a pending SMI); SIPI starts only a CPU waiting for one; fixed interrupts are taken
outside SMM with IF=1 once the OS has an IDT; NMIs are not modelled beyond delivery.
"""

from __future__ import annotations

from smm_hotplug.hw import lpc
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import (
    ABSENT,
    ALL_EXCLUDING_SELF,
    DELIVERY_MODE_NAMES,
    DM_FIXED,
    DM_INIT,
    DM_NMI,
    DM_SIPI,
    DM_SMI,
    WAIT_SIPI,
    Cpu,
    after_init,
    after_sipi,
)
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log

SCI_IRQ = 9  # ICH9 SCI on GSI 9 (ACPI FADT SCI_INT)
SCI_VECTOR = 0x29  # vector the modelled IOAPIC routes the SCI to (programmed by the OS)

# What a CPU takes at its next step (``pending``).
TAKE_INIT = "INIT"
TAKE_SMI = "SMI"
TAKE_INTR = "INTR"


# -- delivery ---------------------------------------------------------------------------------
def send_ipi(board: Board, m: Machine, src: int, dest: int, mode: int, vector: int, log: Log) -> Machine:
    """An IPI from CPU ``src`` to an APIC ID, or to all CPUs but itself."""
    cfg = board.cfg
    log.cross = True  # looks at every slot and changes the targets
    targets = [
        s
        for s, c in enumerate(m.cpus)
        if c.mode != ABSENT and (s != src if dest == ALL_EXCLUDING_SELF else cfg.apic_id(s) == dest)
    ]
    dname = "all-but-self" if dest == ALL_EXCLUDING_SELF else f"APIC {dest}"
    if log.record:
        log.add(
            "ipi",
            f"cpu{src}",
            f"{DELIVERY_MODE_NAMES.get(mode, mode)} IPI -> {dname}"
            + (f" vector 0x{vector:02x}" if mode in (DM_FIXED, DM_SIPI) else ""),
            data=("ipi", mode, tuple(targets)),
        )
    for s in targets:
        m = deliver(board, m, s, mode, vector, log)
    return m


def deliver(board: Board, m: Machine, s: int, mode: int, vector: int, log: Log) -> Machine:
    """One IPI arriving at the CPU in slot ``s``."""
    c = m.cpus[s]
    if mode == DM_SMI:
        return raise_smi(m, s)
    if mode == DM_INIT:
        if c.smm and board.cfg.hw.init_in_smm == "hold":
            log.add("cpu", f"cpu{s}", "INIT held until RSM")
            return set_cpu(m, s, c._replace(init=True))
        if c.smm:
            # QEMU TCG: INIT resets the CPU out of SMM at once and drops a pending SMI.
            log.add("cpu", f"cpu{s}", "INIT in SMM resets the CPU out of SMM (TCG semantics)")
            return set_cpu(m, s, after_init(c)._replace(smi=False))
        return set_cpu(m, s, after_init(c))
    if mode == DM_SIPI:
        if c.mode == WAIT_SIPI:
            log.add("cpu", f"cpu{s}", f"SIPI: starts at 0x{vector << 12:05x}")
            return set_cpu(m, s, after_sipi(c, vector))
        return m  # a SIPI to a CPU not waiting for one is ignored
    if mode == DM_FIXED:
        return set_cpu(m, s, c._replace(irq=c.irq | (1 << vector)))
    if mode == DM_NMI:
        return m  # NMIs are not modelled beyond delivery
    return m


def raise_smi(m: Machine, s: int) -> Machine:
    """The SMI line of the CPU in slot ``s`` (an SMI IPI, or the chipset's APM SMI): latched."""
    return set_cpu(m, s, m.cpus[s]._replace(smi=True))


# -- acceptance -------------------------------------------------------------------------------
def pending(board: Board, m: Machine, slot: int) -> str | None:
    """What the CPU in ``slot`` takes at its next step, if anything: TAKE_INIT, TAKE_SMI or
    TAKE_INTR (otherwise it executes, if it is running)."""
    c = m.cpus[slot]
    if c.init and (not c.smm or board.cfg.hw.init_in_smm != "hold"):
        return TAKE_INIT
    if c.mode == WAIT_SIPI:
        return None
    if c.smi and not c.smm:
        return TAKE_SMI
    if not c.smm and c.intr and c.idt and (c.irq or (slot == 0 and lpc.sci_level(m.lpc))):
        return TAKE_INTR
    return None


def acknowledge(c: Cpu) -> tuple[Cpu, int]:
    """INTA: the vector the CPU takes (lowest pending fixed vector, else the SCI), cleared."""
    if c.irq:
        vector = (c.irq & -c.irq).bit_length() - 1
        return c._replace(irq=c.irq & ~(1 << vector)), vector
    return c, SCI_VECTOR
