"""The interrupt controller: local APIC IPIs, the SMI line, what a CPU takes when — per accelerator.

Two halves.  *Delivery* (``send_ipi``, ``deliver``, ``raise_smi``): an IPI or an SMI reaches a
CPU and is latched (or, where nothing could change the outcome before the CPU next looks at it,
dropped at once).  *Acceptance* (``pending``, ``take_together``, ``acknowledge``): of what a CPU
has latched, which event it takes at its next step — INIT, SIPI, SMI, NMI or an external
interrupt (fixed IPIs, and the ACPI SCI the modelled IOAPIC routes to the BSP).  The CPU core
(hw.core) performs what is taken.

The rules are the accelerator's (``HardwareFeatures.accel``):

* ``kvm`` — Linux 6.1 KVM with QEMU 7.2's in-kernel irqchip (arch/x86/kvm lapic.c, x86.c);
* ``tcg`` — QEMU 7.2.22's TCG (hw/intc/apic.c, accel/tcg/cpu-exec.c, target/i386).

hw.accel_rules states each profile's complete rule set (CPU state x event -> outcome, with the
source function); every branch below names the function it follows.  NMI is modelled as far as
the rules need: one latched NMI (KVM can queue two; nothing here tells them apart), blocked from
SMM entry (and in an NMI handler) until RSM or IRET, taken through the OS's IDT or, with none
loaded, through the real-mode IVT (hw.core).
"""

from __future__ import annotations

from smm_hotplug.hw import lpc
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.config import ACCEL_TCG
from smm_hotplug.hw.cpu import (
    ALL_EXCLUDING_SELF,
    DELIVERY_MODE_NAMES,
    DM_FIXED,
    DM_INIT,
    DM_NMI,
    DM_SIPI,
    DM_SMI,
    HALTED,
    NO_SIPI,
    RUNNING,
    WAIT_SIPI,
    Cpu,
)
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log

SCI_IRQ = 9  # ICH9 SCI on GSI 9 (ACPI FADT SCI_INT)
SCI_VECTOR = 0x29  # vector the modelled IOAPIC routes the SCI to (programmed by the OS)

# What a CPU takes at its next step (``pending``).
TAKE_INIT = "INIT"
TAKE_SIPI = "SIPI"
TAKE_SMI = "SMI"
TAKE_NMI = "NMI"
TAKE_INTR = "INTR"
ACCEPTS = frozenset({TAKE_INIT, TAKE_SIPI})  # KVM's kvm_apic_accept_events


def is_tcg(board: Board) -> bool:
    return board.cfg.hw.accel == ACCEL_TCG


def fresh_ap_uninit(board: Board) -> bool:
    """Does a CPU created waiting for SIPI (AP at power-on, device_add) need an INIT before a SIPI
    starts it?  KVM: QEMU's kvm_arch_reset_vcpu puts APs in KVM_MP_STATE_UNINITIALIZED with the
    in-kernel irqchip, and kvm_apic_accept_events starts only INIT_RECEIVED.  TCG: no —
    apic_init_reset sets wait_for_sipi on every AP reset."""
    return not is_tcg(board)


# -- delivery ---------------------------------------------------------------------------------
def send_ipi(board: Board, m: Machine, src: int, dest: int, mode: int, vector: int, log: Log) -> Machine:
    """An IPI from CPU ``src`` to an APIC ID, or to all CPUs but itself."""
    cfg = board.cfg
    log.cross = True  # looks at every slot and changes the targets
    if dest == ALL_EXCLUDING_SELF:
        targets = [s for s, c in enumerate(m.cpus) if c.present and s != src]
    else:
        slot = cfg.slot_of_apic(dest)
        targets = [] if slot is None or not m.cpus[slot].present else [slot]
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
    """One IPI arriving at the CPU in slot ``s``.  What it does depends on the board and that
    CPU alone, so a log that records nothing takes it from a memo table."""
    if log.record:
        return _deliver(board, m, s, mode, vector, log)
    c = m.cpus[s]
    table = board.memo("apic.deliver")
    key = (c, mode, vector)
    new = table.get(key)
    if new is None:
        if len(table) >= DELIVER_MEMO_LIMIT:
            table.clear()
        new = table[key] = _deliver(board, m, s, mode, vector, log).cpus[s]
    return m if new is c else set_cpu(m, s, new)


DELIVER_MEMO_LIMIT = 1 << 16


def _deliver(board: Board, m: Machine, s: int, mode: int, vector: int, log: Log) -> Machine:
    c = m.cpus[s]
    if not c.present:
        return m  # no CPU, no local APIC
    tcg = is_tcg(board)
    if mode == DM_SMI:
        return raise_smi(board, m, s, log)
    if mode == DM_NMI:
        # One latched NMI: TCG apic_bus_deliver raises the NMI bit; KVM kvm_inject_nmi.
        c = c._replace(nmi=True)
        if not tcg and c.smm and c.mode == HALTED:
            c = _kvm_request_wakes(c, s, "NMI", log)
        return set_cpu(m, s, c)
    if mode == DM_INIT:
        if tcg:
            # apic_bus_deliver: the INIT bit; a pending SIPI bit stays (do_cpu_init keeps it).
            return set_cpu(m, s, c._replace(init=True))
        # __apic_accept_irq: INIT replaces the pending events, so an unaccepted SIPI is lost.
        if c.sipi != NO_SIPI and log.record:
            log.add("cpu", f"cpu{s}", "INIT discards the SIPI not yet accepted")
        return set_cpu(m, s, c._replace(init=True, sipi=NO_SIPI))
    if mode == DM_SIPI:
        if tcg:
            # apic_startup: the vector is stored (the last one wins) and the SIPI bit raised,
            # whatever the target's state; x86_cpu_exec_interrupt decides when it is taken.
            return set_cpu(m, s, c._replace(sipi=vector))
        return _kvm_sipi(c, m, s, vector, log)
    if mode == DM_FIXED:
        if not tcg and c.mode == WAIT_SIPI:
            # __apic_accept_irq: discarded while the APIC is disabled (RESET/INIT leave it so).
            return m
        # apic_set_irq sets IRR even while the APIC is software-disabled (TCG).
        return set_cpu(m, s, c._replace(irq=c.irq | (1 << vector)))
    return m


def _kvm_sipi(c: Cpu, m: Machine, s: int, vector: int, log: Log) -> Machine:
    """KVM: __apic_accept_irq stores the SIPI; kvm_apic_accept_events, at the vCPU's next entry,
    starts it only from INIT_RECEIVED and drops it otherwise, and in SMM.  Where nothing before
    that entry can change the outcome — only an INIT could, and an INIT discards it — the drop
    happens here."""
    if not c.smm and (c.init or (c.mode == WAIT_SIPI and not c.uninit)):
        return set_cpu(m, s, c._replace(sipi=vector))
    if c.mode == HALTED and not c.smm:
        # kvm_vcpu_has_events: a pending, allowed SIPI wakes a halted vCPU (it continues after
        # HLT); accept_events then drops it.
        log.add("cpu", f"cpu{s}", "SIPI wakes it from HLT and is dropped")
        return set_cpu(m, s, c._replace(mode=RUNNING))
    if log.record:
        why = "in SMM" if c.smm else ("never INIT'ed" if c.mode == WAIT_SIPI else "not waiting for SIPI")
        log.add("cpu", f"cpu{s}", f"SIPI dropped ({why})")
    return m


def _kvm_request_wakes(c: Cpu, s: int, what: str, log: Log | None) -> Cpu:
    """KVM kvm_vcpu_has_events counts an outstanding KVM_REQ_SMI/KVM_REQ_NMI without looking at
    SMM: a vCPU halted in SMM wakes once, continues after its HLT, and the event stays latched."""
    if log is not None:
        log.add("cpu", f"cpu{s}", f"{what} wakes it from HLT in SMM; stays latched")
    return c._replace(mode=RUNNING)


def raise_smi(board: Board, m: Machine, s: int, log: Log | None = None) -> Machine:
    """The SMI line of the CPU in slot ``s`` (an SMI IPI, or the chipset's APM SMI): latched, one
    however many arrive (TCG: the SMI bit; KVM: KVM_REQ_SMI, then the boolean smi_pending)."""
    c = m.cpus[s]
    if not c.present:
        return m
    c = c._replace(smi=True)
    if not is_tcg(board) and c.smm and c.mode == HALTED:
        c = _kvm_request_wakes(c, s, "SMI", log)
    return set_cpu(m, s, c)


# -- acceptance -------------------------------------------------------------------------------
def _intr_ready(m: Machine, slot: int, c: Cpu) -> bool:
    """A fixed interrupt or the SCI can be taken: IF=1, outside SMM, with the OS's IDT."""
    return not c.smm and c.intr and bool(c.idt) and bool(c.irq or (slot == 0 and lpc.sci_level(m.lpc)))


def pending(board: Board, m: Machine, slot: int) -> str | None:
    """What the CPU in ``slot`` takes at its next step, if anything: TAKE_INIT, TAKE_SIPI,
    TAKE_SMI, TAKE_NMI or TAKE_INTR (otherwise it executes, if it is running)."""
    c = m.cpus[slot]
    if not c.present:
        return None
    if is_tcg(board):
        return _pending_tcg(m, slot, c)
    return _pending_kvm(m, slot, c)


def _pending_tcg(m: Machine, slot: int, c: Cpu) -> str | None:
    # x86_cpu_pending_interrupt, in its order: SIPI (even in SMM), SMI outside SMM, NMI unless
    # blocked, then a fixed interrupt with IF=1.
    if c.sipi != NO_SIPI:
        event: str | None = TAKE_SIPI
    elif c.smi and not c.smm:
        event = TAKE_SMI
    elif c.nmi and not c.nmi_blocked:
        event = TAKE_NMI
    elif _intr_ready(m, slot, c):
        event = TAKE_INTR
    else:
        event = None
    # cpu_handle_halt: a halted CPU (after HLT, or waiting for SIPI) wakes only for one of those
    # (x86_cpu_has_work); INIT is not one.
    if c.mode != RUNNING and event is None:
        return None
    # cpu_handle_interrupt: INIT before anything else, with no SMM check; one event per pass.
    if c.init:
        return TAKE_INIT
    return event


def _pending_kvm(m: Machine, slot: int, c: Cpu) -> str | None:
    # vcpu_enter_guest (and vcpu_block for a vCPU that is not running): kvm_apic_accept_events
    # first, acting on INIT and SIPI only where kvm_apic_init_sipi_allowed (not in SMM) ...
    if not c.smm and c.init:
        return TAKE_INIT
    if not c.smm and c.sipi != NO_SIPI:
        return TAKE_SIPI
    # ... vcpu_run enters the guest only when RUNNABLE: a vCPU waiting for SIPI holds SMI/NMI ...
    if c.mode == WAIT_SIPI:
        return None
    # ... then kvm_check_and_inject_events: SMI (smi_allowed: not in SMM), NMI (not blocked),
    # then the interrupt; a halted vCPU wakes for each (kvm_vcpu_has_events).
    if c.smi and not c.smm:
        return TAKE_SMI
    if c.nmi and not c.nmi_blocked:
        return TAKE_NMI
    if _intr_ready(m, slot, c):
        return TAKE_INTR
    return None


def take_together(board: Board, taken: str, after: str | None) -> bool:
    """Does the CPU take ``after`` in the same step as ``taken``?  KVM: one guest entry runs
    kvm_apic_accept_events (INIT, then SIPI) and then injects one event (vcpu_enter_guest), so a
    CPU started by SIPI takes a held SMI before its first instruction.  TCG: one event per pass
    of cpu_handle_interrupt."""
    return not is_tcg(board) and taken in ACCEPTS and after is not None


def init_keeps_smi(board: Board, c: Cpu) -> bool:
    """Does a latched SMI survive the INIT the CPU takes now?  TCG: no — do_cpu_init keeps only
    the SIPI bit.  KVM: kvm_vcpu_reset clears smi_pending but not an outstanding KVM_REQ_SMI;
    the request is turned into smi_pending only when the vCPU enters the guest (process_smi in
    vcpu_enter_guest), so it survives on a vCPU that was not running (halted, waiting for SIPI)
    and is lost on a running one (and after RSM with INIT and SMI latched)."""
    return not is_tcg(board) and c.mode != RUNNING


def sipi_starts(c: Cpu) -> bool:
    """Does the SIPI the CPU takes start it?  Only outside SMM (TCG 7.2.22 do_cpu_sipi returns in
    SMM; KVM drops it while INIT/SIPI are blocked) and only when the CPU waits for one: TCG
    apic_sipi checks the APIC's wait_for_sipi, which an SMI or NMI taken while waiting leaves set
    (``apic_wfs``); KVM kvm_apic_accept_events starts only INIT_RECEIVED (not ``uninit``)."""
    if c.smm:
        return False
    return (c.mode == WAIT_SIPI and not c.uninit) or c.apic_wfs


def will_take_smi(board: Board, c: Cpu) -> bool:
    """Will the CPU, outside SMM, take the SMI it has latched without anyone's help?"""
    if not c.smi or c.smm:
        return False
    if is_tcg(board):
        return not c.init  # an INIT is taken first and drops it (cpu_handle_interrupt)
    if c.mode == WAIT_SIPI:
        return False  # held until a SIPI starts the vCPU
    return not (c.init and c.mode == RUNNING)


def acknowledge(c: Cpu) -> tuple[Cpu, int]:
    """INTA: the vector the CPU takes (lowest pending fixed vector, else the SCI), cleared."""
    if c.irq:
        vector = (c.irq & -c.irq).bit_length() - 1
        return c._replace(irq=c.irq & ~(1 << vector)), vector
    return c, SCI_VECTOR
