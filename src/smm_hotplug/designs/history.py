"""Real bugs of QEMU and edk2 in this area, as a catalog the checker rediscovers.

Each entry is a fix from edk2's or QEMU's history (a commit, or a patch changed in review on
qemu-devel).  Its bug is a variant of the one model: the step where the fix went reads a set of
reverted fixes from its build options — ``FirmwareOptions.reverted`` for edk2's steps,
``HardwareFeatures.reverted`` for QEMU's device, its refusals and the AML it builds — and does
what the code did before the fix; no step is copied.  A fix the model's QEMU 7.2 does not have
yet is put in with ``HardwareFeatures.backported`` instead, and one the default firmware does not
have yet is in its later version (``--firmware edk2-current``).

Every entry names the scenario where its race can happen — the configuration and the
adversaries — and the property that fails there when the fix is reverted; with the fix in
place the same scenario holds.  ``checker/history.py`` runs the catalog, ``smm-hotplug history``
lists it, ``check --revert ID`` runs one entry's scenario with the fix reverted.  Sources:
/work/notes/history.md (commits read in edk2's history, threads on qemu-devel).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from smm_hotplug.designs.catalog import DEFAULT_DESIGN, Design
from smm_hotplug.errors import UsageError
from smm_hotplug.firmware import options as fwopt
from smm_hotplug.firmware.options import DEFAULT_FIRMWARE, EDK2_CURRENT, MISSING_FIXES
from smm_hotplug.guest.acpi import FIX_CINS_RESELECT
from smm_hotplug.hw import cpuhp, lpc, mch
from smm_hotplug.hw.config import ACCEL_KVM, SMI_F_BROADCAST, SMI_F_CPU_HOTPLUG

EDK2 = "edk2"
QEMU = "QEMU"
# How the fix is in place in the entry's scenario: in the model as it is (reverting puts the
# bug back), in the later firmware version the scenario runs, or backported onto QEMU 7.2.
IN_MODEL = "in the model"
IN_VERSION = "in the firmware version"
BACKPORTED = "backported"


@dataclass(frozen=True)
class Setting:
    """An entry's scenario: the configuration and the adversaries where its race can happen."""

    boot_cpus: int
    max_cpus: int
    plug: int = 0
    unplug: int = 0
    attacks: tuple[str, ...] = ()
    design: str = DEFAULT_DESIGN
    firmware: str = DEFAULT_FIRMWARE
    smi_features: int | None = None  # what the firmware requests (None: everything)
    backport: tuple[str, ...] = ()  # later upstream QEMU fixes applied
    # Every entry is checked under KVM, the accelerator of the recorded hot-add.  Under TCG the
    # entries that hot-add a CPU run into the TCG findings first (OVMF's TCG hang, or two new CPUs
    # in SMM on one save-state area; README, Findings), before their own race.
    accel: str = ACCEL_KVM

    def describe(self) -> str:
        parts = [
            f"-smp cpus={self.boot_cpus},maxcpus={self.max_cpus}, plug {self.plug}, unplug {self.unplug}",
            "attacks: " + (", ".join(self.attacks) or "none"),
        ]
        if self.design != DEFAULT_DESIGN:
            parts.append(f"design {self.design}")
        if self.accel != ACCEL_KVM:
            parts.append(f"accel {self.accel}")
        if self.firmware != DEFAULT_FIRMWARE:
            parts.append(f"firmware {self.firmware}")
        if self.smi_features is not None:
            parts.append(f"firmware requests SMI features 0x{self.smi_features:x}")
        if self.backport:
            parts.append("QEMU 7.2 with " + ", ".join(self.backport))
        return "; ".join(parts)


@dataclass(frozen=True)
class Entry:
    id: str
    project: str  # EDK2 | QEMU
    date: str  # of the fix (author date, or the review that asked for it)
    title: str
    ref: str  # commit, or the qemu-devel Message-IDs of the patch and its review
    step: str  # where in the model the fix lives
    race: str  # one paragraph: the race, as the code before the fix lost it
    prop: str  # the property that fails with the fix reverted
    scenario: Setting
    fix: str = IN_MODEL
    # How the model expresses the bug, where the choice is not obvious (literal vs semantic).
    expressed: str = ""
    # What the shortest trace with the fix reverted shows of the mechanism: fragments of its step
    # descriptions (and, last, of its verdict's detail), in this order.
    shows: tuple[str, ...] = ()

    @property
    def firmware_fix(self) -> bool:
        return self.project == EDK2


def _entries() -> tuple[Entry, ...]:
    return (
        Entry(
            fwopt.FIX_SKIP_KNOWN_APIC_ID,
            EDK2,
            "2020-08-27",
            "OvmfPkg/CpuHotplugSmm: fix CPU hotplug race just before SMI broadcast",
            "edk2 020bb4b46d6f (TianoCore BZ#2929, Laszlo Ersek)",
            "firmware/cpu_hotplug.py, step add_next (ProcessHotAddedCpus)",
            "A CPU plugged after QEMU's AML (CSCN) collected the new CPUs but before the firmware's "
            "scan is relocated by the firmware, yet the AML never notifies it nor clears its insert "
            "event: that CPU is not in the AML's list.  The event stays, so the next hotplug SMI "
            "collects the same CPU again, and without the check for a known APIC ID the firmware gives "
            "it a second slot of its table and relocates it once more; the CPU, already relocated, "
            "now enters SMM as an ordinary AP and never answers, so the monarch waits in SMM for ever.",
            "firmware-table-consistent",
            Setting(1, 4, plug=2, attacks=("concurrent-plug",)),
            expressed="The known APIC ID takes a second slot, as the code before the fix did, which "
            "is the table inconsistency (no CPU relocated twice) the checker stops at; judged without "
            "firmware-table-consistent the same scenario ends in the commit's hang (the monarch "
            "waiting for AboutToLeaveSmm), which tests/test_history.py checks too.",
            shows=(
                "device_add: cpu3 plugged",
                "OS: Notify(CPU 1, device check)",
                "OS: new CPUs [3]",
                "monarch: APIC ID 3 takes slot 3",
            ),
        ),
        Entry(
            fwopt.FIX_DIRECTED_SMI,
            EDK2,
            "2020-08-27",
            "OvmfPkg/CpuHotplugSmm: fix CPU hotplug race just after SMI broadcast",
            "edk2 cbccf995920a (TianoCore BZ#2929, Laszlo Ersek)",
            "firmware/cpu_hotplug.py, steps rel_pen and rel_smi (SmbaseRelocate)",
            "A CPU plugged after the OS's write to APM_CNT raised the broadcast SMI, but before the "
            "monarch's scan, holds no SMI: QEMU's broadcast went to the CPUs that existed then.  The "
            "firmware still finds it and, before the fix, only sends it INIT-SIPI-SIPI: the CPU starts "
            "in the pen in normal mode, never runs the first-SMI handler, keeps SMBASE 0x30000, and the "
            "monarch waits for AboutToLeaveSmm for ever.  The fix sends it a directed SMI first.",
            "hotplug-completes",
            Setting(1, 3, plug=2, attacks=("concurrent-plug",)),
            shows=(
                "OS: new CPUs [2]",
                "device_add: cpu1 plugged",
                "monarch: relocating APIC ID 1 into slot 1, with no SMI of its own",
                "spins in the monarch's wait for AboutToLeaveSmm",
            ),
        ),
        Entry(
            fwopt.FIX_COLLECT_FW_REMOVE,
            EDK2,
            "2021-03-11",
            "OvmfPkg/CpuHotplugSmm: collect hot-unplug events",
            "edk2 a752dd07466c (TianoCore BZ#3132, Ankur Arora)",
            "firmware/cpu_hotplug.py, step hp_status (QemuCpuhpCollectApicIds)",
            "A remove event only says QEMU got device_del; the OS may not have seen it and still runs "
            "the CPU.  Only the firmware-remove bit, which the OS's _EJ0 sets after taking the CPU "
            "offline, hands it to the firmware.  Before the fix the firmware's scan collected CPUs by "
            "their remove event: a device_del that lands while a hotplug SMI (here another CPU's "
            "_EJ0) is being handled is seen by the monarch's scan, which drops the CPU from its table "
            "and ejects it at SMI exit while the OS is running it.",
            "eject-safe",
            Setting(3, 3, unplug=2, attacks=("unplug-race",)),
            expressed="Literally the classification the commit changed: an insert event excludes a "
            "remove event, a remove event collects the CPU to unplug, the firmware-remove bit is not "
            "looked at; everything after the scan is today's.  (Before the series the unplug list then "
            "hit a 'hot-unplug is not supported yet' dead loop, removed by another commit, 15e6ae8ea4.)",
            shows=(
                "monarch: CPU hotplug SMI",
                "device_del: unplug of cpu1 requested",
                "monarch: APIC ID 1 dropped from slot 1",
                "cpu1 (APIC ID 1) ejected although the OS had not asked for its removal",
            ),
        ),
        Entry(
            fwopt.FIX_NEGOTIATE_SMI_FEATURES,
            EDK2,
            "2026-05-11",
            "OvmfPkg: MmControlPei: Fix QEMU does not send MMI to all cores",
            "edk2 fe89a63da49a (Kun Qin; bug from 8ac270e812, 2025-04)",
            "firmware/boot.py, step smi_supported (the SMI feature negotiation)",
            "OVMF's Standalone-MM boot path starts the MM core in PEI through MmControlPei, which "
            "enabled APM SMIs and locked SMI_EN but never negotiated SMI features with QEMU over fw_cfg. "
            "Until something negotiates, QEMU raises an APM SMI on the writing CPU only (the commit's "
            "'only the BSP getting interrupted into MMI') and offers no SMI on CPU hotplug, so QEMU "
            "accepts a hot-add the firmware never sees: the OS onlines the new CPU with the reset SMBASE "
            "0x30000, whose first SMI would run whatever lies at 0x38000.",
            "smbase-in-tseg",
            Setting(1, 2, plug=1),
            expressed="The model's boot negotiates at one point, MmControlPei's; the revert makes it "
            "behave as MmControlPei did before the fix (SMI_EN programmed, nothing negotiated).  "
            "Literally, SmmControl2Dxe still negotiated later in DXE on that path, so only MMIs raised "
            "in PEI reached the BSP alone; modelled that way (negotiation after the ready-to-lock SMI) "
            "the ready-to-lock SMI reaches only the BSP, the monarch brings the APs in with SMI IPIs "
            "and every property holds, which rediscovers nothing.  The catalog therefore checks what a "
            "boot path that never negotiates does to CPU hotplug.",
            shows=(
                "firmware: this boot path negotiates no SMI features",
                "CPU hotplug SMI no",
                "device_add: cpu1 plugged",
                "OS: onlining CPU 1",
                "cpu1 executes OS code with SMBASE 0x30000",
            ),
        ),
        Entry(
            fwopt.FIX_DELAY_SMM_EXIT,
            EDK2,
            "2024-08-29",
            "OvmfPkg/CpuHotplugSmm: delay SMM exit",
            "edk2 121af960e2ac (PR tianocore/edk2#6138, Gerd Hoffmann; first in edk2-stable202411)",
            "firmware/smm_core.py, step ap_exit (EjectCpu on an AP)",
            "The SMI of an _EJ0 is raised by AML holding the CPU hotplug mutex.  Before the fix the APs "
            "that are not being removed leave SMM as soon as the monarch releases them, while the "
            "monarch, in its exit hook, still writes the selector and then the eject bit of each CPU to "
            "remove.  If the AML ran on one of those APs, the OS releases the mutex and goes on with its "
            "next method, whose selector write lands between the monarch's two writes: the eject hits "
            "the CPU the OS just selected.  The fix keeps every CPU in SMM until all ejects are written.",
            "eject-safe",
            Setting(4, 4, unplug=2, attacks=("unplug-race",), firmware=EDK2_CURRENT),
            fix=IN_VERSION,
            expressed="The fix is a firmware version: edk2-stable202211, the default, has the bug "
            "(`check --attack unplug-race` finds it there), edk2-current has the fix.  The entry's "
            "scenario runs edk2-current; reverting takes the fix out of it (its APs leave EjectCpu at "
            "once, as in 202211).  Reverting it from edk2-stable202211 is refused: nothing to revert.",
            shows=(
                "OS: _EJ0 CPU 1: firmware-driven eject",
                "monarch: APIC ID 1 dropped from slot 1",
                "OS: hotplug work on cpu2: eject request of CPU 3",
                "monarch: ejects processor 1 (QEMU selector 1); cpu3 (APIC ID 3) ejected",
            ),
        ),
        Entry(
            FIX_CINS_RESELECT,
            QEMU,
            "2020-08-25",
            "x68: acpi: trigger SMI before sending hotplug Notify event to OSPM (v2-v4)",
            "qemu-devel <20200818122208.1243901-7-imammedo@redhat.com>, review by Laszlo Ersek "
            "<382e54cc-1ac0-61e5-bf5d-0653480222a0@redhat.com>; fixed in v5, QEMU 5.2",
            "guest/acpi.py, steps notify and notify_clear (QEMU's CSCN)",
            "The selector is one register shared by the AML and the firmware.  CSCN collects the new "
            "CPUs, raises the SMI, then notifies each and clears its insert event; in v2-v4 it did not "
            "select the CPU again before the clear, so the clear hit whichever CPU was selected last — "
            "after the SMI, wherever the firmware's scan left the selector.  With two new CPUs in one "
            "scan both clears hit the same CPU and the other keeps its insert event for ever.",
            "hotplug-completes",
            Setting(1, 3, plug=2, attacks=("concurrent-plug",)),
            expressed="The AML is QEMU's (build_cpus_aml), so the revert is a HardwareFeatures option read "
            "by the OS's AML step.  One CPU per scan works (the firmware leaves the selector on it), as "
            "the review noted; two plugged together do not.",
            shows=(
                "OS: new CPUs [1, 2]",
                "OS: CINS = 1 meant for CPU 1, without selecting it",
                "OS: CINS = 1 meant for CPU 2, without selecting it",
                "insert event pending for cpu1",
            ),
        ),
        Entry(
            cpuhp.FIX_GET_NEXT_FW_REMOVE,
            QEMU,
            "2020-12-07",
            "acpi: cpuhp: introduce 'firmware performs eject' status/control bits (v1)",
            "qemu-devel <20201204170939.1815522-3-imammedo@redhat.com>, review by Ankur Arora "
            "<891d22af-617c-7962-4fe8-e60cd18f4df3@oracle.com>; fixed in v2, QEMU 6.0",
            "hw/cpuhp.py, next_with_event (command 0, GET_NEXT_CPU_WITH_EVENT)",
            "When the OS's _EJ0 sets the firmware-remove bit and raises the SMI, its CSCN has already "
            "cleared the CPU's remove event.  If command 0 stops only at insert and remove events, the "
            "firmware's scan never reaches the CPU, never collects it and never ejects it: the OS finds "
            "the CPU still present after _EJ0 and the unplug never completes.",
            "hotplug-completes",
            Setting(2, 2, unplug=1),
            shows=(
                "OS: _EJ0 CPU 1: firmware-driven eject",
                "monarch: CPU hotplug SMI",
                "OS: CPU 1: eject incomplete",
                "fw-remove pending for cpu1",
            ),
        ),
        Entry(
            cpuhp.FIX_EJECT_CLEARS_FW_REMOVE,
            QEMU,
            "2020-12-04",
            "acpi: cpuhp: introduce 'firmware performs eject' status/control bits (RFC)",
            "qemu-devel <20201124122507.1014839-1-imammedo@redhat.com>, review by Laszlo Ersek "
            "<bf87cef4-cac9-1c1b-5bd4-c6bc97dff994@redhat.com>; fixed in v1, QEMU 6.0",
            "hw/cpuhp.py, write (the eject and firmware-remove bits)",
            "The firmware ejects with the selector and the eject bit only; it never writes the "
            "firmware-remove bit again.  If the eject leaves that bit set, the empty slot keeps an event "
            "for ever, and a CPU plugged into the slot again shows an insert event together with the "
            "firmware-remove bit: the firmware's scan calls that inconsistent and stops in a dead loop "
            "in SMM.",
            "hotplug-completes",
            Setting(2, 2, unplug=1, attacks=("replug-same-slot",)),
            expressed="As the RFC had it: the eject leaves the bit alone and each write of 1 flips it "
            "(the same revision of the patch dropped the flip).",
            shows=(
                "monarch: ejects processor 1 (QEMU selector 1); cpu1 (APIC ID 1) ejected",
                "device_add: cpu1 plugged",
                "monarch: selector 1: inconsistent CPU status 0x13",
                "monarch: fatal error, dead loop in SMM",
            ),
        ),
        Entry(
            lpc.FIX_REFUSE_PLUG,
            QEMU,
            "2020-09-23",
            "x86: cpuhp: prevent guest crash on CPU hotplug when broadcast SMI is in use",
            "qemu-devel <20200923094650.1301166-3-imammedo@redhat.com>, QEMU 5.2",
            "hw/lpc.py, plug_refusal (ich9_pm_device_pre_plug_cb)",
            "OVMF negotiated broadcast SMIs from 2017 but could not relocate a hot-added CPU until "
            "August 2020.  QEMU accepted the hot-add anyway; the OS onlined the CPU with the reset "
            "SMBASE 0x30000, and its first SMI (any UEFI variable access broadcasts one) ran whatever "
            "lay at 0x38000 in OS memory: the guest crashes that were reported.  QEMU now refuses "
            "device_add when broadcast SMI is negotiated without CPU hotplug SMI.",
            "smbase-in-tseg",
            Setting(1, 2, plug=1, smi_features=SMI_F_BROADCAST),
            expressed="The scenario's firmware requests broadcast SMIs only (--fw-smi-features 1), as "
            "OVMF did then.",
            shows=(
                "SMI features negotiated 0x1",
                "device_add: cpu1 plugged",
                "OS: onlining CPU 1",
                "cpu1 executes OS code with SMBASE 0x30000",
            ),
        ),
        Entry(
            lpc.FIX_REFUSE_UNPLUG,
            QEMU,
            "2020-07-20",
            "x86: cpuhp: refuse cpu hot-unplug request earlier if not supported",
            "qemu-devel <20200720141610.574308-4-imammedo@redhat.com>, QEMU 5.2",
            "hw/lpc.py, unplug_refusal (ich9_pm_device_unplug_request_cb)",
            "Without firmware support for hot-unplug the AML's _EJ0 writes the eject bit itself, and "
            "QEMU removes a CPU the SMM firmware still counts in its table: its next SMI rendezvous "
            "waits for a CPU that is gone, and the same APIC ID plugged again is 'already known' and "
            "never relocated.  QEMU now refuses device_del when broadcast SMI is negotiated without "
            "CPU hot-unplug SMI.",
            "eject-safe",
            Setting(2, 2, unplug=1, smi_features=SMI_F_BROADCAST | SMI_F_CPU_HOTPLUG),
            expressed="The scenario's firmware requests broadcast and CPU hotplug SMIs but not "
            "hot-unplug (--fw-smi-features 3), as OVMF did from August 2020 to March 2021.",
            shows=(
                "SMI features negotiated 0x3",
                "device_del: unplug of cpu1 requested",
                "OS: _EJ0 CPU 1: direct eject",
                "cpu1 (APIC ID 1) ejected while the firmware still counts it",
            ),
        ),
        Entry(
            mch.FIX_SMBASE_MIGRATION,
            QEMU,
            "2025-12-11",
            "q35: Fix migration of SMRAM state",
            "qemu-devel <20251211165454.288476-1-imammedo@redhat.com> (Igor Mammedov; reported by "
            "Andrey Ryabinin; Fixes f404220e279c); not in QEMU 7.2",
            "hw/mch.py, _update_smbase_window (mch_update_smbase_smram, run on post-load)",
            "The write mask of MCH register 0x9c is not migrated, so on the destination it is the reset "
            "0xff, and QEMU's update, run on post-load, takes that for 'not negotiated yet' and zeroes "
            "the register: the default-SMBASE window the firmware locked as SMRAM (its first-SMI "
            "handler and context live there) is ordinary RAM on the destination, open to the OS and to "
            "DMA.  The fix derives the mask from the value, so the lock survives.",
            "smram-isolation",
            Setting(
                1,
                1,
                attacks=("migration", "os-code-at-default-smbase"),
                backport=(mch.FIX_SMBASE_MIGRATION,),
            ),
            fix=BACKPORTED,
            expressed="QEMU 7.2 has the bug, so the model does by default.  The entry's scenario runs "
            "QEMU 7.2 with the upstream fix backported; reverting it is QEMU 7.2 as it is.",
            shows=(
                "the default-SMBASE window is no longer locked SMRAM",
                "the OS writes its own code at 0x38000",
                "non-SMM write of 0x38000+256 reached SMRAM",
            ),
        ),
    )


ENTRIES: dict[str, Entry] = {e.id: e for e in _entries()}
# Every fix a step can revert or take in has its entry (tests/test_history.py checks both ways).
MODEL_FIXES = frozenset(
    {
        *fwopt.EDK2_FIXES,
        FIX_CINS_RESELECT,
        cpuhp.FIX_GET_NEXT_FW_REMOVE,
        cpuhp.FIX_EJECT_CLEARS_FW_REMOVE,
        lpc.FIX_REFUSE_PLUG,
        lpc.FIX_REFUSE_UNPLUG,
        mch.FIX_SMBASE_MIGRATION,
    }
)


def get_entry(entry_id: str) -> Entry:
    try:
        return ENTRIES[entry_id]
    except KeyError:
        raise UsageError(f"unknown history entry '{entry_id}' (known: {', '.join(ENTRIES)})") from None


def with_fixes(design: Design, revert: tuple[str, ...] = (), backport: tuple[str, ...] = ()) -> Design:
    """The design with the fixes of history entries ``revert`` taken out (their bugs back) and the
    later upstream QEMU fixes ``backport`` put in."""
    hw, fw = design.hw, design.fw
    for fid in backport:
        if get_entry(fid).fix != BACKPORTED:
            raise UsageError(f"{fid} is not a later fix to backport: the model's QEMU and firmware have it")
        hw = replace(hw, backported=hw.backported | {fid})
    for fid in revert:
        entry = get_entry(fid)
        if fid in backport:
            raise UsageError(f"{fid} cannot be both reverted and backported")
        if entry.fix == BACKPORTED:  # QEMU 7.2 as it is (named among the reverted fixes)
            hw = replace(hw, backported=hw.backported - {fid}, reverted=hw.reverted | {fid})
        elif entry.firmware_fix:
            if fid in MISSING_FIXES.get(fw.version, frozenset()):
                raise UsageError(
                    f"firmware {fw.version} does not have {fid} (it has the bug already); "
                    f"revert it from --firmware {EDK2_CURRENT}"
                )
            fw = replace(fw, reverted=fw.reverted | {fid})
        else:
            hw = replace(hw, reverted=hw.reverted | {fid})
    return replace(design, hw=hw, fw=fw)
