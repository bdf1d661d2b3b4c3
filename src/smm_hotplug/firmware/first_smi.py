"""Code a hot-added CPU runs around its first SMI, as OVMF's CpuHotplugSmm does it.

* ``fw.first_smi`` sits at SMM_DEFAULT_SMBASE + 0x8000 (0x38000): the CPU knocks on the APIC ID
  gate in the context at 0x30000 until the monarch names it, writes the new SMBASE into its
  save-state map (64-bit map: SMBASE+0xFF00), sets AboutToLeaveSmm and executes RSM.
* ``fw.pen`` is the Post-SMM Pen in a reserved page below 1 MiB: it reports back through the
  page's last byte, then halts with interrupts off until the OS starts the CPU.
* ``fw.first_smi_rsm`` and ``fw.msr_trampoline`` serve the smbase-msr design.
"""

from __future__ import annotations

from smm_hotplug.code import program
from smm_hotplug.firmware import layout as L
from smm_hotplug.hw.cpu import SS_REVISION_ID, SS_SMBASE

SS_SMBASE_LEGACY = 0xFEF8  # SMBASE field of the 32-bit (Intel) save-state map

first_smi = program("fw.first_smi", "firmware", size=0x100, doc="first-SMI handler at 0x38000")


@first_smi.step("entry", waits="knocks at the APIC ID gate in its first SMI until the monarch names it")
def _knock(b, r):
    if not b.opt.gate:
        return "revision"
    # LOCK CMPXCHG8B: swap our own APIC ID in the gate back to "closed"; else keep knocking.
    if b.cmpxchg(L.CTX_GATE, 8, b.apic_id, L.INVALID_APIC_ID):
        b.note(f"first SMI: APIC ID {b.apic_id} passes the gate")
        return "revision"
    return None


@first_smi.step("revision")
def _revision(b, r):
    rev = b.rd(L.WINDOW_BASE + SS_REVISION_ID, 4)
    field = SS_SMBASE if rev & 0xFFFF else SS_SMBASE_LEGACY
    return "load", (field,)


@first_smi.step("load")
def _load(b, r):
    return "store", (r[0], b.rd(L.CTX_NEW_SMBASE, 4))


@first_smi.step("store")
def _store(b, r):
    field, new = r
    b.wr(L.WINDOW_BASE + field, 4, new)
    b.note(f"first SMI: new SMBASE 0x{new:x} written to the save-state map")
    return "leave", ()


@first_smi.step("leave")
def _leave(b, r):
    b.wr(L.ctx_about_to_leave(b.opt), 1, 1)
    return "rsm"


@first_smi.step("rsm")
def _rsm(b, r):
    b.rsm()
    return "rsm"


pen = program("fw.pen", "firmware", size=0x100, doc="Post-SMM Pen")


@pen.step("entry")
def _pen_report(b, r):
    # DS := CS: the pen writes the last byte of its own page, wherever the firmware put it.
    page = b.m.cpus[b.slot].pc[0] & ~(L.PAGE - 1)
    b.wr(page + L.PEN_VACATED, 1, 1)
    return "halt"


@pen.step("halt", waits="is halted in the pen (CLI; HLT) until the OS starts it")
def _pen_halt(b, r):
    b.cli()
    b.hlt()
    return "halt"


first_smi_rsm = program("fw.first_smi_rsm", "firmware", size=0x10, doc="RSM-only first-SMI handler")


@first_smi_rsm.step("entry")
def _just_rsm(b, r):
    b.rsm()
    return "entry"


msr_trampoline = program("fw.msr_trampoline", "firmware", size=0x100, doc="WRMSR SMBASE trampoline")


@msr_trampoline.step("entry")
def _msr_load(b, r):
    return "wrmsr", (b.rd(L.MSR_MAILBOX, 4),)


@msr_trampoline.step("wrmsr")
def _msr_write(b, r):
    b.wrmsr_smbase(r[0])
    return "done", ()


@msr_trampoline.step("done")
def _msr_done(b, r):
    b.wr(L.MSR_DONE, 1, 1)
    return "halt"


@msr_trampoline.step("halt", waits="is halted in the SMBASE trampoline until the OS starts it")
def _msr_halt(b, r):
    b.cli()
    b.hlt()
    return "halt"
