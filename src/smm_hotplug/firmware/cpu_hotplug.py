"""The CPU hotplug MMI handler and the hot-eject, as OvmfPkg/CpuHotplugSmm does them.

Steps of the monarch's program (``fw.smm_core``, see ``firmware.smm_core``), after edk2's
CpuHotplug.c, QemuCpuhp.c and Smbase.c (/work/notes/edk2-firmware.md §5):

* ``hp_*`` — QemuCpuhpCollectApicIds: walk the hotplug block with GET_NEXT_CPU_WITH_EVENT,
  collect CPUs with an insert event (to relocate) and with the firmware-remove bit (to eject).
* ``add_*``, ``rel_*``, ``msr_*`` — ProcessHotAddedCpus: skip an APIC ID already known, store
  the new one in a free slot *before* relocating it, then relocate it like SmbaseRelocate
  (directed SMI, INIT-SIPI-SIPI into the pen, the APIC ID gate, wait for AboutToLeaveSmm and
  the pen), or, in other designs, through the SMBASE MSR trampoline.
* ``rm_next`` — UnplugCpus: RemoveProcessor drops the CPU from the table at once (refusing the
  BSP and a CPU added in this same SMI), then its QEMU selector is stored in QemuSelectorMap,
  indexed by processor number and kept in SMRAM across SMIs (an entry still set is fatal), and
  the eject handler is armed.
* ``ej_*`` — EjectCpu on the BSP, from the rendezvous exit after the final release: for every
  set map entry, select the CPU, write the eject bit, then clear the entry; then disarm the
  handler.  It does not wait for the CPU being removed to halt (edk2 does not either).
"""

from __future__ import annotations

from smm_hotplug.firmware import layout as L
from smm_hotplug.firmware.options import (
    FIX_COLLECT_FW_REMOVE,
    FIX_DIRECTED_SMI,
    FIX_SKIP_KNOWN_APIC_ID,
    RELOC_FIRST_SMI,
    RELOC_MSR,
)
from smm_hotplug.firmware.smm_core import HP, Scan, core, lay, table
from smm_hotplug.hw import cpuhp
from smm_hotplug.hw.cpu import DM_INIT, DM_SIPI, DM_SMI


def pen(b) -> int:
    """mPostSmmPenAddress: the pen page the firmware allocated at boot (layout.post_smm_pen_page),
    as it recorded it in SMRAM."""
    return b.rd(lay(b).post_smm_pen, 4)


@core.step("hp_begin")
def _hp_begin(b, r: Scan):
    if b.opt.relocation == RELOC_FIRST_SMI:
        b.install(pen(b), "fw.pen")  # SmbaseReinstallPostSmmPen
    return "hp_sel", r._replace(sel=0, plugged=(), unplug=(), idx=0, added=(), ejects=0)


@core.step("hp_sel")
def _hp_sel(b, r: Scan):
    b.out(HP + cpuhp.SELECTOR, 4, r.sel)
    return "hp_cmd"


@core.step("hp_cmd")
def _hp_cmd(b, r: Scan):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_NEXT_WITH_EVENT)
    return "hp_pending"


@core.step("hp_pending")
def _hp_pending(b, r: Scan):
    pending = b.inp(HP + cpuhp.DATA, 4)
    if pending < r.sel:
        return "add_next", r._replace(idx=0)  # wrapped around
    return "hp_status", r._replace(sel=pending)


@core.step("hp_status")
def _hp_status(b, r: Scan):
    st = b.inp(HP + cpuhp.FLAGS, 1)
    if not b.opt.has_fix(FIX_COLLECT_FW_REMOVE):
        return _hp_status_before_fw_remove(b, r, st)
    if st & cpuhp.F_INSERT:
        if not st & cpuhp.F_ENABLED or st & cpuhp.F_FW_REMOVE:
            b.note(f"monarch: selector {r.sel}: inconsistent CPU status 0x{st:x}")
            return "fatal"
        return "hp_archid_cmd", r._replace(inserting=True)
    if st & cpuhp.F_FW_REMOVE:
        if not st & cpuhp.F_ENABLED:
            b.note(f"monarch: selector {r.sel}: inconsistent CPU status 0x{st:x}")
            return "fatal"
        return "hp_archid_cmd", r._replace(inserting=False)
    if st & cpuhp.F_REMOVE:
        return _next_selector(b, r)  # a plain remove request is the OS's business
    return "add_next", r._replace(idx=0)  # no event: collection done


def _hp_status_before_fw_remove(b, r: Scan, st: int):
    """QemuCpuhpCollectApicIds before a752dd0746 ("collect hot-unplug events", 2021-03): an insert
    event excludes a remove event, a CPU with a remove event — QEMU's device_del, which the OS
    has not handled yet — is collected to unplug, and the firmware-remove bit is unknown."""
    if st & cpuhp.F_INSERT:
        if not st & cpuhp.F_ENABLED or st & cpuhp.F_REMOVE:
            b.note(f"monarch: selector {r.sel}: inconsistent CPU status 0x{st:x}")
            return "fatal"
        return "hp_archid_cmd", r._replace(inserting=True)
    if st & cpuhp.F_REMOVE:
        return "hp_archid_cmd", r._replace(inserting=False)
    return "add_next", r._replace(idx=0)  # no event (fw_remove is not looked at): collection done


def _next_selector(b, r: Scan):
    sel = r.sel + 1
    if sel >= lay(b).max_cpus:
        return "add_next", r._replace(idx=0)
    return "hp_sel", r._replace(sel=sel)


@core.step("hp_archid_cmd")
def _hp_archid_cmd(b, r: Scan):
    b.out(HP + cpuhp.COMMAND, 1, cpuhp.CMD_GET_ARCH_ID)
    return "hp_archid"


@core.step("hp_archid")
def _hp_archid(b, r: Scan):
    apic = b.inp(HP + cpuhp.DATA, 4)
    if r.inserting:
        r = r._replace(plugged=(*r.plugged, (apic, r.sel)))
    else:
        r = r._replace(unplug=(*r.unplug, (apic, r.sel)))
    return _next_selector(b, r)


# -- hot-added CPUs, one at a time (ProcessHotAddedCpus) ------------------------------------------
@core.step("add_next", joins=True)
def _add_next(b, r: Scan):
    if r.idx >= len(r.plugged):
        return "rm_next", r._replace(idx=0)
    apic, sel = r.plugged[r.idx]
    known = table(b)
    if apic in known and b.opt.has_fix(FIX_SKIP_KNOWN_APIC_ID):
        b.note(f"monarch: APIC ID {apic} is already known; skipped")
        return "add_next", r._replace(idx=r.idx + 1)
    # Before 020bb4b46d (2020-08) a known APIC ID took a free slot and was relocated once more.
    if b.opt.slot_by_selector:
        slot = sel if known[sel] == L.INVALID_APIC_ID else None
    else:
        slot = next((i for i, a in enumerate(known) if a == L.INVALID_APIC_ID), None)
    if slot is None:
        b.note(f"monarch: no room for APIC ID {apic}")
        return "fatal"
    # The APIC ID goes into its slot first; relocation follows (RevokeNewSlot on failure).
    sl = lay(b)
    b.wr(sl.apic_id_slot(slot), 8, apic)
    b.note(f"monarch: APIC ID {apic} takes slot {slot}, SMBASE 0x{sl.tile_smbase(slot):x}")
    r = r._replace(apic=apic, slot=slot, added=(*r.added, slot))
    if b.opt.relocation == RELOC_FIRST_SMI:
        return "rel_clear", r
    if b.opt.relocation == RELOC_MSR:
        return "msr_mailbox", r
    # hotplug-smbase-reg: the VMM created the CPU with its slot's SMBASE; preinit-spares: the
    # VMM is trusted to give it back the SMBASE relocated at boot.  Nothing to relocate.
    return "add_next", r._replace(idx=r.idx + 1)


@core.step("rel_clear")
def _rel_clear(b, r: Scan):
    b.wr(L.ctx_about_to_leave(b.opt), 1, 0)
    return "rel_pen"


@core.step("rel_pen")
def _rel_pen(b, r: Scan):
    b.wr(pen(b) + L.PEN_VACATED, 1, 0)
    if not b.opt.has_fix(FIX_DIRECTED_SMI):
        # Before cbccf99592 (2020-08): INIT-SIPI-SIPI alone, trusting the broadcast SMI to be
        # pending in the new CPU (it is not when the CPU was plugged after the broadcast).
        b.note(f"monarch: relocating APIC ID {r.apic} into slot {r.slot}, with no SMI of its own")
        return "rel_init"
    return "rel_smi"


@core.step("rel_smi")
def _rel_smi(b, r: Scan):
    b.note(f"monarch: relocating APIC ID {r.apic} into slot {r.slot}")
    b.ipi(r.apic, DM_SMI)
    return "rel_init"


@core.step("rel_init")
def _rel_init(b, r: Scan):
    b.ipi(r.apic, DM_INIT)
    return "rel_sipi1"


@core.step("rel_sipi1", waits="waits out the INIT-to-SIPI delay before starting the new CPU in the pen")
def _rel_sipi1(b, r: Scan):
    if not b.init_delay_elapsed(r.apic):  # SendInitSipiSipi's MicroSecondDelay
        return None
    b.ipi(r.apic, DM_SIPI, pen(b) >> 12)
    return "rel_sipi2"


@core.step("rel_sipi2")
def _rel_sipi2(b, r: Scan):
    b.ipi(r.apic, DM_SIPI, pen(b) >> 12)
    return "rel_newsmbase"


@core.step("rel_newsmbase")
def _rel_newsmbase(b, r: Scan):
    b.wr(L.CTX_NEW_SMBASE, 4, lay(b).tile_smbase(r.slot))
    return "rel_gate" if b.opt.gate else "rel_wait_leave"


@core.step("rel_gate")
def _rel_gate(b, r: Scan):
    if not b.cmpxchg(L.CTX_GATE, 8, L.INVALID_APIC_ID, r.apic):
        b.note("monarch: APIC ID gate was not closed (EFI_PROTOCOL_ERROR)")
        b.wr(lay(b).apic_id_slot(r.slot), 8, L.INVALID_APIC_ID)  # RevokeNewSlot
        return "fatal"
    return "rel_wait_leave"


@core.step(
    "rel_wait_leave",
    waits="spins in the monarch's wait for AboutToLeaveSmm from the CPU being relocated",
)
def _rel_wait_leave(b, r: Scan):
    return "rel_wait_pen" if b.rd(L.ctx_about_to_leave(b.opt), 1) == 1 else None


@core.step("rel_wait_pen", waits="spins in the monarch's wait for the relocated CPU to report from the pen")
def _rel_wait_pen(b, r: Scan):
    return ("add_next", r._replace(idx=r.idx + 1)) if b.rd(pen(b) + L.PEN_VACATED, 1) == 1 else None


@core.step("msr_mailbox")
def _msr_mailbox(b, r: Scan):
    b.wr_many([(L.MSR_MAILBOX, 4, lay(b).tile_smbase(r.slot)), (L.MSR_DONE, 1, 0)])
    b.install(L.FIRST_SMI_HANDLER, "fw.first_smi_rsm")
    return "msr_init"


@core.step("msr_init")
def _msr_init(b, r: Scan):
    b.ipi(r.apic, DM_INIT)
    return "msr_sipi"


@core.step("msr_sipi", waits="waits out the INIT-to-SIPI delay before starting the SMBASE trampoline")
def _msr_sipi(b, r: Scan):
    if not b.init_delay_elapsed(r.apic):
        return None
    b.ipi(r.apic, DM_SIPI, L.MSR_TRAMPOLINE >> 12)
    return "msr_wait"


@core.step("msr_wait", waits="spins in the monarch's wait for the SMBASE trampoline to report")
def _msr_wait(b, r: Scan):
    return ("add_next", r._replace(idx=r.idx + 1)) if b.rd(L.MSR_DONE, 1) == 1 else None


# -- CPUs to remove (UnplugCpus) -------------------------------------------------------------------
@core.step("rm_next", joins=True)
def _rm_next(b, r: Scan):
    sl = lay(b)
    if r.idx >= len(r.unplug):
        if r.ejects:
            b.wr(sl.eject_handler, 8, sl.smm_core)  # Handler = EjectCpu, run from the exit hook
        return "exit", r
    apic, sel = r.unplug[r.idx]
    known = table(b)
    if apic not in known:
        b.note(f"monarch: APIC ID {apic} to unplug is unknown; ignored")
        return "rm_next", r._replace(idx=r.idx + 1)
    slot = known.index(apic)
    if slot == r.cpu or slot in r.added:
        why = "the executing CPU" if slot == r.cpu else "added in this SMI"
        b.note(f"monarch: RemoveProcessor({slot}) refused: {why} (EFI_UNSUPPORTED)")
        return "fatal"
    b.wr(sl.apic_id_slot(slot), 8, L.INVALID_APIC_ID)  # SmmRemoveProcessor: dropped at once
    if b.rd(sl.selector_map(slot), 8) != L.NO_SELECTOR:
        b.note(f"monarch: QemuSelectorMap[{slot}] is still set (EFI_ALREADY_STARTED)")
        return "fatal"
    b.wr(sl.selector_map(slot), 8, sel)
    b.note(f"monarch: APIC ID {apic} dropped from slot {slot}, to be ejected at SMI exit")
    return "rm_next", r._replace(idx=r.idx + 1, ejects=r.ejects + 1)


# -- EjectCpu on the BSP, from the rendezvous exit -------------------------------------------------
@core.step("ej_next", joins=True)
def _ej_next(b, r: Scan):
    sl = lay(b)
    entries = b.rd_many([sl.selector_map(i) for i in range(r.idx, sl.max_cpus)], 8)
    nxt = next((r.idx + k for k, sel in enumerate(entries) if sel != L.NO_SELECTOR), None)
    if nxt is None:
        b.wr(sl.eject_handler, 8, 0)  # Handler = NULL: every eject is written
        return "rsm"
    return "ej_sel", r._replace(idx=nxt, sel=entries[nxt - r.idx])


@core.step("ej_sel")
def _ej_sel(b, r: Scan):
    b.out(HP + cpuhp.SELECTOR, 4, r.sel)
    return "ej_eject"


@core.step("ej_eject")
def _ej_eject(b, r: Scan):
    b.note(f"monarch: ejects processor {r.idx} (QEMU selector {r.sel})")
    b.out(HP + cpuhp.FLAGS, 1, cpuhp.F_EJECT)
    b.wr(lay(b).selector_map(r.idx), 8, L.NO_SELECTOR)  # cleared only after its eject write
    return "ej_next", r._replace(idx=r.idx + 1)
