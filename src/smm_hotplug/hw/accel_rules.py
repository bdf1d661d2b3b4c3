"""The accelerator profiles as tables: for a CPU in each state, what each event does, and why.

``RULES[accel]`` is the complete rule set of one profile (``kvm``: Linux 6.1 KVM with QEMU 7.2's
in-kernel irqchip; ``tcg``: QEMU 7.2.22's TCG) as rows *CPU state x events -> outcome*, each
with the source functions that say so (paths in /work/notes/accel-rules.md: QEMU's hw/intc,
accel/tcg and target/i386; Linux's arch/x86/kvm).  hw.apic and hw.core implement the rules;
tests/test_accel.py builds each state, sends the events and checks the outcome, row by row;
``differences_markdown`` is the README's table of what differs between the profiles.

An outcome is what the CPU does once it has taken everything it takes by itself: its state,
where it executes next, what it still has latched, and — for an SMM entry — the return address
in its save-state map, or for RSM what became of SMBASE.
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.config import ACCEL_KVM, ACCEL_TCG

# CPU states a rule starts from.
ABSENT = "absent"
HOT_ADDED = "hot-added"  # fresh from device_add, never INIT'ed (KVM: UNINITIALIZED)
WAIT_SIPI = "wait-for-SIPI"  # an AP after INIT
RUNNING = "running"
BSP = "running BSP"
HALTED = "halted"
SMM = "in SMM"
SMM_HALTED = "in SMM, halted"

# Where the CPU executes next.
NOWHERE = "-"  # waits, or absent
SAME = "where it was"  # for a halted CPU: after its HLT
SMI_HANDLER = "SMI handler"  # SMBASE+0x8000, in SMM
NMI_HANDLER = "NMI handler"  # IDT vector 2, or the real-mode IVT's
SIPI_VECTOR = "SIPI vector"  # the last SIPI's vector x 0x1000
RESET_VECTOR = "reset vector"

# Events (see tests/test_accel.py for how each is sent): IPIs arriving before the CPU looks,
# then "|" lets it take what it takes by itself, "RSM" makes it execute RSM if it is in SMM.
SMI, NMI, INIT, SIPI, FIXED = "SMI", "NMI", "INIT", "SIPI", "fixed"
RSM = "RSM"
RSM_NO_BIT17 = "RSM (revision ID without bit 17)"


class Outcome(NamedTuple):
    state: str
    at: str
    latched: frozenset[str] = frozenset()
    saved: str | None = None  # return address in the save-state map after an SMM entry
    smbase: str | None = None  # after RSM: "reloaded" from the save-state map, or "kept"


class Rule(NamedTuple):
    state: str
    events: tuple[str, ...]
    outcome: Outcome
    text: str
    source: str


def _o(state: str, at: str, *latched: str, saved: str | None = None, smbase: str | None = None) -> Outcome:
    return Outcome(state, at, frozenset(latched), saved, smbase)


def _r(state: str, events: str, outcome: Outcome, text: str, source: str) -> Rule:
    return Rule(state, tuple(e.strip() for e in events.split(",")), outcome, text, source)


IGNORED = "ignored: no CPU, no local APIC"

# The tables, three lines a rule: state, events, outcome; what happens; the source functions (for
# a rule both profiles share: TCG's | KVM's).
# fmt: off
_COMMON = (
    _r(ABSENT, "SMI", _o(ABSENT, NOWHERE),
       IGNORED,
       "apic_bus_deliver | kvm_irq_delivery_to_apic"),
    _r(ABSENT, "NMI", _o(ABSENT, NOWHERE),
       IGNORED,
       "apic_bus_deliver | kvm_irq_delivery_to_apic"),
    _r(ABSENT, "INIT", _o(ABSENT, NOWHERE),
       IGNORED,
       "apic_bus_deliver | kvm_irq_delivery_to_apic"),
    _r(ABSENT, "SIPI", _o(ABSENT, NOWHERE),
       IGNORED,
       "apic_deliver | kvm_irq_delivery_to_apic"),
    _r(RUNNING, "SMI", _o(SMM, SMI_HANDLER, saved=SAME),
       "taken at the next instruction boundary",
       "x86_cpu_exec_interrupt, do_smm_enter | vcpu_enter_guest, enter_smm"),
    _r(HALTED, "SMI", _o(SMM, SMI_HANDLER, saved=SAME),
       "wakes it and is taken; RSM resumes after the HLT (no auto-HALT restart)",
       "x86_cpu_has_work, do_smm_enter | kvm_vcpu_has_events, enter_smm"),
    _r(SMM, "SMI", _o(SMM, SAME, SMI),
       "latched, one however many arrive",
       "x86_cpu_pending_interrupt (SMI only outside SMM) | vmx_smi_allowed"),
    _r(RUNNING, "NMI", _o(RUNNING, NMI_HANDLER),
       "taken through the IDT; NMIs blocked until IRET",
       "x86_cpu_exec_interrupt | kvm_check_and_inject_events"),
    _r(HALTED, "NMI", _o(RUNNING, NMI_HANDLER),
       "wakes it and is taken",
       "x86_cpu_has_work | kvm_vcpu_has_events"),
    _r(SMM, "NMI", _o(SMM, SAME, NMI),
       "latched: SMM entry blocks NMIs until RSM",
       "do_smm_enter | enter_smm, vmx_nmi_allowed"),
    _r(RUNNING, "INIT", _o(WAIT_SIPI, NOWHERE),
       "taken at once: reset, SMBASE kept; the AP waits for SIPI",
       "cpu_handle_interrupt, do_cpu_init | kvm_apic_accept_events, kvm_vcpu_reset"),
    _r(BSP, "INIT", _o(RUNNING, RESET_VECTOR),
       "taken at once: the BSP restarts at the reset vector",
       "do_cpu_init, x86_cpu_reset | kvm_apic_accept_events (BSP -> RUNNABLE)"),
    _r(SMM_HALTED, "INIT", _o(SMM_HALTED, SAME, INIT),
       "latched; does not wake it",
       "x86_cpu_has_work (INIT not in it) | kvm_apic_init_sipi_allowed"),
    _r(WAIT_SIPI, "SIPI", _o(RUNNING, SIPI_VECTOR),
       "starts it in real mode at vector x 0x1000",
       "apic_sipi | kvm_apic_accept_events"),
    _r(RUNNING, "SIPI", _o(RUNNING, SAME),
       "dropped: the CPU does not wait for one",
       "apic_sipi (wait_for_sipi clear) | kvm_apic_accept_events (not INIT_RECEIVED)"),
    _r(HALTED, "SIPI", _o(RUNNING, SAME),
       "wakes it (it continues after HLT) and is dropped",
       "x86_cpu_has_work, apic_sipi | kvm_vcpu_has_events, kvm_apic_accept_events"),
    _r(SMM, "SIPI", _o(SMM, SAME),
       "dropped",
       "do_cpu_sipi (7.2.22: returns in SMM) | kvm_apic_accept_events"),
    _r(HOT_ADDED, "INIT, SIPI", _o(RUNNING, SIPI_VECTOR),
       "INIT-SIPI starts it",
       "do_cpu_init, apic_sipi | kvm_apic_accept_events"),
    _r(WAIT_SIPI, "SIPI, SIPI", _o(RUNNING, SIPI_VECTOR),
       "two SIPIs before it looks: the last vector wins",
       "apic_startup | __apic_accept_irq"),
    _r(WAIT_SIPI, "SMI, SIPI", _o(SMM, SMI_HANDLER, saved=SIPI_VECTOR),
       "SIPI first, then the SMI, before any instruction at the vector: RSM returns there",
       "x86_cpu_pending_interrupt (SIPI before SMI) | vcpu_enter_guest"),
    _r(RUNNING, "SMI, INIT", _o(WAIT_SIPI, NOWHERE),
       "INIT first; the SMI is dropped",
       "cpu_handle_interrupt, do_cpu_init | vcpu_enter_guest, kvm_vcpu_reset"),
    _r(HALTED, "INIT, SIPI", _o(RUNNING, SIPI_VECTOR),
       "INIT, then the SIPI starts it",
       "do_cpu_init (keeps SIPI) | kvm_apic_accept_events"),
    _r(WAIT_SIPI, "NMI, INIT", _o(WAIT_SIPI, NOWHERE),
       "INIT first; the NMI is dropped",
       "do_cpu_init | kvm_vcpu_reset (nmi_queued cleared)"),
    _r(RUNNING, "NMI, |, NMI", _o(RUNNING, NMI_HANDLER, NMI),
       "an NMI during the NMI handler stays latched until IRET",
       "x86_cpu_pending_interrupt (HF2_NMI_MASK) | vmx_nmi_allowed"),
    _r(SMM, "SMI, RSM", _o(SMM, SMI_HANDLER, saved=SAME, smbase="reloaded"),
       "the latched SMI is taken right after RSM, at the SMBASE RSM loaded",
       "helper_rsm, x86_cpu_pending_interrupt | kvm_smm_changed (KVM_REQ_EVENT)"),
    _r(SMM, "NMI, RSM", _o(RUNNING, NMI_HANDLER, smbase="reloaded"),
       "RSM unblocks NMIs; the latched NMI is taken",
       "helper_rsm | em_rsm"),
    _r(SMM, "RSM", _o(RUNNING, SAME, smbase="reloaded"),
       "RSM reloads SMBASE from the save-state map (revision ID 0x00020064 has bit 17)",
       "helper_rsm | rsm_load_state_64"),
)

# -- rules that differ --------------------------------------------------------------------------
_TCG = (
    _r(HOT_ADDED, "SMI", _o(SMM, SMI_HANDLER, saved=RESET_VECTOR),
       "wakes it and is taken at once; the reset state is saved (RSM returns to the reset vector)",
       "x86_cpu_has_work, cpu_handle_halt, do_smm_enter"),
    _r(WAIT_SIPI, "SMI", _o(SMM, SMI_HANDLER, saved=RESET_VECTOR),
       "wakes it and is taken at once; the reset state is saved",
       "x86_cpu_has_work, cpu_handle_halt, do_smm_enter"),
    _r(SMM_HALTED, "SMI", _o(SMM_HALTED, SAME, SMI),
       "latched; does not wake it",
       "x86_cpu_has_work (no SMI in SMM)"),
    _r(HOT_ADDED, "NMI", _o(RUNNING, NMI_HANDLER),
       "wakes it; taken through the real-mode IVT from the reset state",
       "x86_cpu_has_work, x86_cpu_exec_interrupt"),
    _r(WAIT_SIPI, "NMI", _o(RUNNING, NMI_HANDLER),
       "wakes it; taken through the real-mode IVT from the reset state",
       "x86_cpu_has_work, x86_cpu_exec_interrupt"),
    _r(SMM_HALTED, "NMI", _o(SMM_HALTED, SAME, NMI),
       "latched; does not wake it",
       "x86_cpu_has_work"),
    _r(HOT_ADDED, "INIT", _o(WAIT_SIPI, NOWHERE, INIT),
       "latched; does not wake it (acted on when a SIPI, SMI or NMI does)",
       "x86_cpu_has_work (INIT not in it), cpu_handle_halt"),
    _r(WAIT_SIPI, "INIT", _o(WAIT_SIPI, NOWHERE, INIT),
       "latched; does not wake it",
       "x86_cpu_has_work (INIT not in it), cpu_handle_halt"),
    _r(HALTED, "INIT", _o(HALTED, SAME, INIT),
       "latched; does not wake it (acted on first when something else does)",
       "x86_cpu_has_work (INIT not in it), cpu_handle_halt"),
    _r(SMM, "INIT", _o(WAIT_SIPI, NOWHERE),
       "taken at once: resets the CPU out of SMM (SMBASE: the current one, not the save-state's)",
       "cpu_handle_interrupt (no SMM check), do_cpu_init"),
    _r(HOT_ADDED, "SIPI", _o(RUNNING, SIPI_VECTOR),
       "starts it: its APIC waits for SIPI from reset",
       "apic_init_reset (wait_for_sipi), apic_sipi"),
    _r(SMM_HALTED, "SIPI", _o(SMM, SAME),
       "wakes it (it continues after HLT, in SMM) and is dropped",
       "x86_cpu_has_work (SIPI unconditional), do_cpu_sipi"),
    _r(WAIT_SIPI, "fixed", _o(WAIT_SIPI, NOWHERE, FIXED),
       "kept in IRR while the APIC is software-disabled (an INIT clears it)",
       "apic_set_irq, apic_irq_pending"),
    _r(WAIT_SIPI, "SIPI, INIT", _o(RUNNING, SIPI_VECTOR),
       "INIT first, keeping the SIPI sent before it, which then starts the CPU",
       "do_cpu_init (keeps the SIPI bit)"),
    _r(WAIT_SIPI, "SMI, INIT", _o(WAIT_SIPI, NOWHERE),
       "the SMI wakes it, INIT is taken first and drops the SMI",
       "cpu_handle_interrupt, do_cpu_init"),
    _r(HOT_ADDED, "SMI, INIT, SIPI", _o(RUNNING, SIPI_VECTOR),
       "OVMF's relocation IPIs: INIT drops the SMI, the SIPI starts the CPU outside SMM",
       "cpu_handle_interrupt, do_cpu_init, apic_sipi"),
    _r(HALTED, "SMI, INIT", _o(WAIT_SIPI, NOWHERE),
       "the SMI wakes it, INIT is taken first and drops the SMI",
       "cpu_handle_interrupt, do_cpu_init"),
    _r(SMM_HALTED, "INIT, SIPI", _o(RUNNING, SIPI_VECTOR),
       "the SIPI wakes it: INIT resets it out of SMM, the SIPI starts it",
       "x86_cpu_has_work, cpu_handle_interrupt, do_cpu_init, apic_sipi"),
    _r(WAIT_SIPI, "SMI, |, RSM, SIPI", _o(RUNNING, SIPI_VECTOR),
       "after RSM it runs the reset vector with its APIC still waiting, and a SIPI starts it",
       "apic_sipi (wait_for_sipi left set)"),
    _r(SMM, "INIT, SMI, RSM", _o(WAIT_SIPI, NOWHERE, smbase="kept"),
       "INIT is taken at once, before any RSM: out of SMM with the current SMBASE (the new one in the"
       " save-state map is not applied); the SMI is dropped",
       "cpu_handle_interrupt, do_cpu_init"),
    _r(SMM, RSM_NO_BIT17, _o(RUNNING, SAME, smbase="kept"),
       "RSM keeps SMBASE",
       "helper_rsm"),
)

_KVM = (
    _r(HOT_ADDED, "SMI", _o(HOT_ADDED, NOWHERE, SMI),
       "held (KVM_REQ_SMI) until INIT and SIPI start it",
       "kvm_arch_vcpu_ioctl_run, vcpu_run"),
    _r(WAIT_SIPI, "SMI", _o(WAIT_SIPI, NOWHERE, SMI),
       "held until a SIPI starts it",
       "vcpu_run, vcpu_block"),
    _r(SMM_HALTED, "SMI", _o(SMM, SAME, SMI),
       "latched; the request wakes it once (it continues after HLT, in SMM)",
       "kvm_vcpu_has_events (KVM_REQ_SMI without an SMM check)"),
    _r(HOT_ADDED, "NMI", _o(HOT_ADDED, NOWHERE, NMI),
       "held until the vCPU runs",
       "vcpu_run"),
    _r(WAIT_SIPI, "NMI", _o(WAIT_SIPI, NOWHERE, NMI),
       "held until a SIPI starts it",
       "vcpu_run"),
    _r(SMM_HALTED, "NMI", _o(SMM, SAME, NMI),
       "latched; the request wakes it once (it continues after HLT, in SMM)",
       "kvm_vcpu_has_events (KVM_REQ_NMI)"),
    _r(HOT_ADDED, "INIT", _o(WAIT_SIPI, NOWHERE),
       "accepted: UNINITIALIZED -> INIT_RECEIVED",
       "kvm_apic_accept_events"),
    _r(WAIT_SIPI, "INIT", _o(WAIT_SIPI, NOWHERE),
       "accepted: reset again, still INIT_RECEIVED",
       "kvm_apic_accept_events"),
    _r(HALTED, "INIT", _o(WAIT_SIPI, NOWHERE),
       "wakes it and is accepted: reset, waits for SIPI",
       "kvm_vcpu_has_events, vcpu_block, kvm_apic_accept_events"),
    _r(SMM, "INIT", _o(SMM, SAME, INIT),
       "latched until RSM (INIT/SIPI blocked in SMM)",
       "kvm_apic_init_sipi_allowed, kvm_apic_accept_events"),
    _r(HOT_ADDED, "SIPI", _o(HOT_ADDED, NOWHERE),
       "dropped: only an INIT_RECEIVED vCPU is started",
       "kvm_arch_reset_vcpu (QEMU: UNINITIALIZED), kvm_apic_accept_events"),
    _r(SMM_HALTED, "SIPI", _o(SMM_HALTED, SAME),
       "dropped; does not wake it",
       "kvm_apic_accept_events, kvm_vcpu_has_events"),
    _r(WAIT_SIPI, "fixed", _o(WAIT_SIPI, NOWHERE),
       "discarded: the APIC is disabled after RESET/INIT",
       "__apic_accept_irq"),
    _r(WAIT_SIPI, "SIPI, INIT", _o(WAIT_SIPI, NOWHERE),
       "INIT replaces the pending events: the SIPI sent before it is lost",
       "__apic_accept_irq"),
    _r(WAIT_SIPI, "SMI, INIT", _o(WAIT_SIPI, NOWHERE, SMI),
       "the SMI survives the INIT (the request is not consumed while the vCPU does not run)",
       "kvm_vcpu_reset (KVM_REQ_SMI kept)"),
    _r(HOT_ADDED, "SMI, INIT, SIPI", _o(SMM, SMI_HANDLER, saved=SIPI_VECTOR),
       "OVMF's relocation IPIs: the SIPI starts it and the held SMI is taken at once",
       "kvm_vcpu_reset, kvm_apic_accept_events, vcpu_enter_guest"),
    _r(HALTED, "SMI, INIT", _o(WAIT_SIPI, NOWHERE, SMI),
       "INIT is accepted while halted; the SMI request survives it",
       "vcpu_block, kvm_apic_accept_events, kvm_vcpu_reset"),
    _r(SMM_HALTED, "INIT, SIPI", _o(SMM_HALTED, SAME, INIT),
       "INIT latched, SIPI dropped: it stays halted in SMM",
       "kvm_apic_init_sipi_allowed, kvm_apic_accept_events"),
    _r(WAIT_SIPI, "SMI, |, RSM, SIPI", _o(SMM, SMI_HANDLER, saved=SIPI_VECTOR),
       "the SMI is held (no RSM to execute); the SIPI starts it and the SMI is taken at once",
       "vcpu_run, vcpu_enter_guest"),
    _r(SMM, "INIT, SMI, RSM", _o(WAIT_SIPI, NOWHERE, smbase="reloaded"),
       "INIT is held until RSM, then taken: SMBASE is the one RSM loaded; the SMI is dropped",
       "kvm_smm_changed, kvm_apic_accept_events, kvm_vcpu_reset"),
    _r(SMM, RSM_NO_BIT17, _o(RUNNING, SAME, smbase="reloaded"),
       "RSM reloads SMBASE whatever the revision ID",
       "rsm_load_state_64"),
)
# fmt: on

RULES: dict[str, tuple[Rule, ...]] = {
    ACCEL_KVM: tuple(r._replace(source=r.source.split(" | ")[-1]) for r in _COMMON) + _KVM,
    ACCEL_TCG: tuple(r._replace(source=r.source.split(" | ")[0]) for r in _COMMON) + _TCG,
}


def _key(rule: Rule) -> tuple[str, tuple[str, ...]]:
    return rule.state, rule.events


def differences() -> list[tuple[Rule, Rule]]:
    """(kvm rule, tcg rule) for each state and events where the profiles differ."""
    tcg = {_key(r): r for r in RULES[ACCEL_TCG]}
    return [(r, tcg[_key(r)]) for r in RULES[ACCEL_KVM] if tcg[_key(r)].outcome != r.outcome]


def differences_markdown() -> str:
    """The README's table: one row per difference, each with the source functions."""
    lines = ["| CPU state | events | `kvm` (Linux 6.1) | `tcg` (QEMU 7.2.22) |", "| --- | --- | --- | --- |"]
    for kvm, tcg in differences():
        events = ", then ".join(e for e in kvm.events if e != "|")
        lines.append(
            f"| {kvm.state} | {events} | {kvm.text} (`{kvm.source}`) | {tcg.text} (`{tcg.source}`) |"
        )
    return "\n".join(lines)
