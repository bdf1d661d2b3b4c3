"""The properties every run is checked against.

Two are detected where they happen, inside the hardware model: ``smm-code-integrity`` when a CPU
in SMM fetches code (hw.bus.step_program) and ``smram-isolation`` when a non-SMM or DMA access
reaches memory the firmware keeps SMM code or data in (hw.views).
``eject-safe`` is checked the moment the hotplug block ejects a CPU (``eject_monitor``), the
state invariants after every step (``check_state``), and ``hotplug-completes`` by the drivers:
the simulator at the end of its schedule, the checker over all schedules.

The invariants read the machine as a debugger would — CPU registers, the chipset, the code a CPU
executes, and the firmware's and the OS's variables in memory (the firmware's CPU table and
QemuSelectorMap in SMRAM, the OS's per-CPU online flags); the software sees none of this.
"""

from __future__ import annotations

from smm_hotplug.firmware import layout as FW
from smm_hotplug.firmware.smm_core import PAST_LAST_RENDEZVOUS_WRITE
from smm_hotplug.guest import kernel
from smm_hotplug.hw import apic, mch, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import (
    HALTED,
    RUNNING,
    SAVE_STATE_END,
    SAVE_STATE_START,
    SMI_HANDLER_OFFSET,
    SS_SMBASE,
    WAIT_SIPI,
)
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, SMM

PROPERTIES: dict[str, str] = {
    "smm-code-integrity": "no CPU executes in SMM from memory that is not firmware-written",
    "smram-isolation": "no non-SMM access and no DMA reads or writes SMRAM (TSEG, and the "
    "default-SMBASE window where the firmware keeps SMM code)",
    "smbase-in-tseg": "every CPU that executes OS code has its SMBASE inside TSEG, in a tile of its own "
    "(judged once it executes: a CPU the OS starts with an SMI pending takes the SMI first)",
    "save-state-exclusive": "no two CPUs in SMM at once use overlapping save-state areas",
    "eject-safe": "a CPU is ejected only after the OS took it offline and asked for its removal "
    "(_EJ0), and after the firmware dropped it from its CPU table, while it is parked: in SMM, "
    "past its last write to the SMI rendezvous (or halted there with interrupts off)",
    "firmware-table-consistent": "the firmware's CPU table holds each present, relocated CPU's APIC ID "
    "exactly once, in the slot whose SMBASE tile the CPU uses (a CPU being ejected excepted), "
    "and no CPU is relocated twice",
    "hotplug-completes": "no deadlock; under fair scheduling every plug ends with a relocated CPU "
    "the OS runs, and every unplug with an ejected CPU",
}


def firmware_table(board: Board, m: Machine) -> list[int]:
    """The firmware's CPU table (CPU_HOT_PLUG_DATA.ApicId[]), read from SMRAM."""
    lay = FW.smram_layout(board.cfg)
    return [views.read(board, m, lay.apic_id_slot(i), 8, SMM) for i in range(lay.max_cpus)]


def runs_os_code(board: Board, m: Machine, slot: int) -> bool:
    c = m.cpus[slot]
    if c.smm or c.mode not in (RUNNING, HALTED) or c.pc is None:
        return False
    obj, writer = views.fetch(board, m, c.pc[0], CPU)
    return obj is not None and writer == "os"


def executes_os_code(board: Board, m: Machine, slot: int) -> bool:
    """The CPU runs OS code and takes no SMI or INIT before its next instruction there (a CPU
    the OS started while an SMI is latched enters SMM first; INIT stops it)."""
    if not runs_os_code(board, m, slot):
        return False
    return apic.pending(board, m, slot) not in (apic.TAKE_SMI, apic.TAKE_INIT)


def check_state(board: Board, m: Machine, log: Log) -> None:
    """The state invariants, after every step."""
    cpus = m.cpus
    in_smm = [(s, c.smbase) for s, c in enumerate(cpus) if c.present and c.smm]
    for i, (sa, ba) in enumerate(in_smm):
        for sb, bb in in_smm[i + 1 :]:
            if abs(ba - bb) < SAVE_STATE_END - SAVE_STATE_START:
                log.violate(
                    "save-state-exclusive",
                    f"cpu{sa} and cpu{sb} are in SMM with save-state areas at "
                    f"0x{ba + SAVE_STATE_START:x} and 0x{bb + SAVE_STATE_START:x}",
                )
    tseg = None
    for s, c in enumerate(cpus):
        if not c.present or c.smm or c.mode not in (RUNNING, HALTED) or not executes_os_code(board, m, s):
            continue
        if tseg is None:
            tseg = mch.tseg_range(m.mch, board.cfg) or (0, 0)
        entry = c.smbase + SMI_HANDLER_OFFSET
        if not (tseg[0] <= entry and c.smbase + SAVE_STATE_END <= tseg[1]):
            log.violate("smbase-in-tseg", f"cpu{s} executes OS code with SMBASE 0x{c.smbase:x}, outside TSEG")
            continue
        for t, d in enumerate(cpus):
            if t != s and d.present and abs(d.smbase - c.smbase) < FW.TILE_STRIDE:
                log.violate(
                    "smbase-in-tseg",
                    f"cpu{s} executes OS code with SMBASE 0x{c.smbase:x}, sharing a tile with cpu{t}",
                )
                break
    if m.smram_claims:  # the firmware has set up SMRAM, its table among it
        check_table(board, m, log)


TABLE_MEMO_LIMIT = 1 << 16  # distinct RAM images whose table analysis is remembered


def _table_slots(board: Board, m: Machine) -> tuple[dict[int, int], str | None]:
    """APIC ID -> slot of the firmware's CPU table, and the first duplicate entry (as text).
    Read from physical RAM (TSEG is RAM) and remembered per RAM image: states share them."""
    memo = board.memo("firmware-table")
    hit = memo.get(m.mem)
    if hit is not None:
        return hit
    lay = FW.smram_layout(board.cfg)
    slot_of: dict[int, int] = {}
    duplicate = None
    for i in range(lay.max_cpus):
        a = m.mem.read(lay.apic_id_slot(i), 8)
        if a == FW.INVALID_APIC_ID:
            continue
        if a in slot_of:
            duplicate = f"APIC ID {a} is in the firmware's CPU table twice (slots {slot_of[a]} and {i})"
            break
        slot_of[a] = i
    if len(memo) >= TABLE_MEMO_LIMIT:
        memo.clear()
    memo[m.mem] = (slot_of, duplicate)
    return slot_of, duplicate


def check_table(board: Board, m: Machine, log: Log) -> None:
    """firmware-table-consistent.  A CPU counts as relocated when it can enter SMM at a TSEG
    tile: its SMBASE is a tile's and it is not waiting for SIPI (a CPU a VMM creates with a
    tile's SMBASE is not the firmware's business until it runs)."""
    slot_of, duplicate = _table_slots(board, m)
    if duplicate is not None:
        log.violate("firmware-table-consistent", duplicate)
        return
    lay = FW.smram_layout(board.cfg)
    for s, c in enumerate(m.cpus):
        if not c.present or c.mode == WAIT_SIPI:
            continue
        tile = lay.tile_of(c.smbase)
        if tile is None:
            continue
        apic_id = board.cfg.apic_id(s)
        if c.smm and m.mem.read(c.smbase + SS_SMBASE, 4) != c.smbase:
            log.violate(
                "firmware-table-consistent",
                f"cpu{s} (APIC ID {apic_id}), already relocated to tile {tile}, is given another SMBASE",
            )
            return
        slot = slot_of.get(apic_id)
        if slot is None:
            if m.mem.read(lay.selector_map(tile), 8) != FW.NO_SELECTOR:
                continue  # dropped from the table and waiting for its eject
            log.violate(
                "firmware-table-consistent",
                f"cpu{s} (APIC ID {apic_id}) can enter SMM at tile {tile} but is not in the firmware's "
                "CPU table",
            )
            return
        if slot != tile:
            log.violate(
                "firmware-table-consistent",
                f"cpu{s} (APIC ID {apic_id}) uses the SMBASE tile of slot {tile} but is recorded in "
                f"slot {slot}",
            )
            return


def os_gave_up(board: Board, m: Machine, apic_id: int) -> bool:
    """The OS does not count the CPU as running: it never onlined it, or the CPU acknowledged
    the OS's offline request (the OS's per-CPU flags, guest.kernel)."""
    online = views.read(board, m, kernel.online_flag(apic_id), 1, CPU)
    acked = views.read(board, m, kernel.offline_ack(apic_id), 1, CPU)
    return not online or bool(acked)


def parked(board: Board, m: Machine, slot: int) -> bool:
    """In SMM and past its last write to the SMI rendezvous (edk2's EjectCpu on the BSP ejects
    such a CPU whether or not it has reached its CLI; HLT yet), or halted there with IF=0."""
    c = m.cpus[slot]
    if not c.smm:
        return False
    if c.mode == HALTED and not c.intr:
        return True
    if c.pc is None:
        return False
    obj = views.object_at(board, m, c.pc[0], SMM)
    return obj is not None and obj.value == "fw.smm_core" and c.pc[1] in PAST_LAST_RENDEZVOUS_WRITE


def eject_monitor(board: Board, m: Machine, slot: int, log: Log, requested: bool = True) -> None:
    """eject-safe, at the moment the hotplug block ejects ``slot``; ``requested``: the OS had
    asked for the removal (fw_remove set by its _EJ0, or the eject written by the OS itself)."""
    c = m.cpus[slot]
    apic_id = board.cfg.apic_id(slot)
    who = f"cpu{slot} (APIC ID {apic_id})"
    if not requested:
        log.violate("eject-safe", f"{who} ejected although the OS had not asked for its removal (_EJ0)")
    elif not os_gave_up(board, m, apic_id):
        log.violate("eject-safe", f"{who} ejected while the OS still runs it (not offlined)")
    elif apic_id in firmware_table(board, m):
        log.violate("eject-safe", f"{who} ejected while the firmware still counts it")
    elif not parked(board, m, slot):
        where = "in SMM" if c.smm else "outside SMM"
        state = "halted" if c.mode == HALTED else "waiting for SIPI" if c.mode == WAIT_SIPI else "running"
        log.violate("eject-safe", f"{who} ejected while not parked ({where}, {state})")
