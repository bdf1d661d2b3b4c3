"""x86 processor state relevant to SMM, and its architectural constants.

Sources: Intel SDM vol. 3C ch. 32 "System Management Mode"; QEMU target/i386 (smm_helper.c,
64-bit "AMD-style" save-state map that QEMU implements for x86_64 guests).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.vmstate import Vmstate

# Run states of a CPU slot (which events wake a halted or waiting CPU is the accelerator's:
# hw.apic).
ABSENT = 0  # no CPU in the slot (not plugged, or ejected)
WAIT_SIPI = 1  # after RESET/INIT of an AP, or a freshly hot-plugged CPU: waits for a SIPI
RUNNING = 2
HALTED = 3  # executed HLT

MODE_NAMES = {ABSENT: "absent", WAIT_SIPI: "wait-for-SIPI", RUNNING: "running", HALTED: "halted"}

# SDM 32.4: SMBASE after RESET is 0x30000; the first SMI enters at 3000:8000.
DEFAULT_SMBASE = 0x30000
SMI_HANDLER_OFFSET = 0x8000
# The state-save map occupies the top 1 KiB of the 64 KiB SMRAM segment.
SAVE_STATE_START = 0xFC00
SAVE_STATE_END = 0x10000
# QEMU's 64-bit save-state map (target/i386/tcg/sysemu/smm_helper.c), offsets from SMBASE:
SS_REVISION_ID = 0xFEFC  # SMM revision identifier
SS_SMBASE = 0xFF00  # SMBASE field, reloaded by RSM when the revision ID has bit 17
SS_RFLAGS = 0xFF70
SS_RIP = 0xFF78
SS_GPRS = 0xFF80  # general purpose registers (0xFF80..0xFFFF)
SMM_REVISION_ID = 0x00020064  # QEMU x86_64: bit 17 = SMBASE relocation supported
REVISION_SMBASE_RELOCATION = 1 << 17

EFLAGS_IF = 1 << 9

# The real-mode interrupt vector table (IDTR after RESET/INIT: base 0): vector n's far pointer
# (offset u16, segment u16) is at 4*n (SDM vol. 3A 20.1.4).  NMI is vector 2.
NMI_VECTOR = 2

# Local APIC ICR delivery modes (SDM vol. 3A 10.6.1).
DM_FIXED = 0
DM_SMI = 2
DM_NMI = 4
DM_INIT = 5
DM_SIPI = 6
DELIVERY_MODE_NAMES = {
    DM_FIXED: "fixed",
    DM_SMI: "SMI",
    DM_NMI: "NMI",
    DM_INIT: "INIT",
    DM_SIPI: "SIPI",
}
# ICR destination shorthand "all excluding self".
ALL_EXCLUDING_SELF = -1

Pc = tuple[int, str]  # (base address of the code object, label inside the program)


class Cpu(NamedTuple):
    """One CPU slot.  ``regs`` is the program-visible register file (a small tuple)."""

    mode: int = ABSENT
    smm: bool = False
    smbase: int = DEFAULT_SMBASE
    pc: Pc | None = None
    regs: tuple = ()
    intr: bool = False  # EFLAGS.IF
    smi: bool = False  # an SMI is latched
    init: bool = False  # an INIT is pending
    irq: int = 0  # bitmask of pending fixed-interrupt vectors
    # Interrupt return frames, innermost first: (pc, regs, intr, outer frame) or None.
    frame: tuple | None = None
    idt: int = 0  # code address interrupts vector to (set by the OS with LIDT); 0: real-mode IVT
    nmi: bool = False  # an NMI is latched
    sipi: int = -1  # vector of a pending SIPI (the last one sent wins), NO_SIPI if none
    nmi_blocked: bool = False  # NMIs are blocked: in an NMI handler until IRET, or in SMM
    smm_in_nmi: bool = False  # SMM was entered with NMIs blocked: RSM keeps them blocked
    uninit: bool = False  # KVM: a vCPU never INIT'ed since it was created; a SIPI alone is dropped
    apic_wfs: bool = False  # TCG: the APIC still waits for SIPI though the CPU runs (hw.apic)

    @property
    def present(self) -> bool:
        return self.mode != ABSENT


NO_SIPI = -1


def power_on_cpu(is_bsp: bool, reset_pc: Pc | None, uninit: bool = False) -> Cpu:
    """A CPU after RESET: the BSP runs the firmware at the reset vector, APs wait for SIPI
    (``uninit``: as a vCPU KVM has never INIT'ed, which a SIPI alone does not start)."""
    if is_bsp:
        return Cpu(mode=RUNNING, pc=reset_pc)
    return Cpu(mode=WAIT_SIPI, uninit=uninit)


def hot_added_cpu(smbase: int = DEFAULT_SMBASE, uninit: bool = False) -> Cpu:
    """A CPU created by device_add: reset state, waiting for SIPI (QEMU x86_cpu_realizefn);
    ``uninit`` as in ``power_on_cpu``."""
    return Cpu(mode=WAIT_SIPI, smbase=smbase, uninit=uninit)


def after_init(cpu: Cpu, is_bsp: bool, reset_pc: Pc | None, keep_smi: bool) -> Cpu:
    """INIT: the CPU is reset except SMBASE (SDM 32.11; QEMU do_cpu_init keeps the
    INIT-preserved block, KVM kvm_vcpu_reset sets 0x30000 only on RESET).  It leaves SMM,
    NMIs are unblocked and pending NMIs and interrupts are gone; the BSP runs the firmware at
    the reset vector, an AP waits for SIPI.  A pending SIPI is kept; ``keep_smi``: whether a
    latched SMI survives (the accelerator decides, hw.apic)."""
    smi = cpu.smi and keep_smi
    if is_bsp:
        return Cpu(mode=RUNNING, pc=reset_pc, smbase=cpu.smbase, smi=smi, sipi=cpu.sipi)
    return Cpu(mode=WAIT_SIPI, smbase=cpu.smbase, smi=smi, sipi=cpu.sipi)


def after_sipi(cpu: Cpu, vector: int) -> Cpu:
    """SIPI to a waiting CPU: real mode at vector * 0x1000."""
    return cpu._replace(
        mode=RUNNING,
        pc=(vector << 12, "entry"),
        regs=(),
        intr=False,
        sipi=NO_SIPI,
        apic_wfs=False,
        uninit=False,
    )


# Live migration (target/i386/machine.c vmstate_x86_cpu and cpu_common, the local APIC): under
# KVM QEMU pulls the SMM state before saving and hands it back after loading (kvm_get/put_vcpu_
# events: in SMM, a pending SMI, an INIT latched in SMM; MSR_IA32_SMBASE; mp_state, so also
# wait-for-SIPI and halted), besides the registers and pending interrupts: all of it travels.
VMSTATE = Vmstate("cpu", lambda c: Cpu._fields)
