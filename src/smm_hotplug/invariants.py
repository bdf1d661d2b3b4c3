"""The properties every run is checked against.

Two are detected where they happen, inside the hardware model: ``smm-code-integrity`` when a CPU
in SMM fetches code (hw.bus.step_program) and ``smram-isolation`` when a non-SMM or DMA access
reaches memory the firmware keeps SMM code or data in (hw.views).
``eject-safe`` is checked the moment the hotplug block ejects a CPU (``eject_monitor``), the
state invariants after every step (``check_state``), and ``hotplug-completes`` by the drivers:
the simulator at the end of its schedule, the checker over all schedules.
"""

from __future__ import annotations

from smm_hotplug.firmware import layout as FW
from smm_hotplug.hw import mch, views
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.cpu import (
    HALTED,
    RUNNING,
    SAVE_STATE_END,
    SAVE_STATE_START,
    SMI_HANDLER_OFFSET,
)
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log
from smm_hotplug.hw.views import CPU, SMM

PROPERTIES: dict[str, str] = {
    "smm-code-integrity": "no CPU executes in SMM from memory that is not firmware-written",
    "smram-isolation": "no non-SMM access and no DMA reads or writes SMRAM (TSEG, and the "
    "default-SMBASE window where the firmware keeps SMM code)",
    "smbase-in-tseg": "every CPU the OS runs has its SMBASE inside TSEG, in a tile of its own",
    "save-state-exclusive": "no two CPUs in SMM at once use overlapping save-state areas",
    "eject-safe": "a CPU is ejected only after the firmware dropped it from its CPU table, and "
    "while it is parked (halted in SMM with interrupts off)",
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


def check_state(board: Board, m: Machine, log: Log) -> None:
    """State invariants 3 and 4, after every step."""
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
        if not c.present or c.smm or c.mode not in (RUNNING, HALTED) or not runs_os_code(board, m, s):
            continue
        if tseg is None:
            tseg = mch.tseg_range(m.mch, board.cfg) or (0, 0)
        entry = c.smbase + SMI_HANDLER_OFFSET
        if not (tseg[0] <= entry and c.smbase + SAVE_STATE_END <= tseg[1]):
            log.violate("smbase-in-tseg", f"the OS runs cpu{s} with SMBASE 0x{c.smbase:x}, outside TSEG")
            continue
        for t, d in enumerate(cpus):
            if t != s and d.present and abs(d.smbase - c.smbase) < FW.TILE_STRIDE:
                log.violate(
                    "smbase-in-tseg",
                    f"the OS runs cpu{s} with SMBASE 0x{c.smbase:x}, sharing a tile with cpu{t}",
                )
                break


def eject_monitor(board: Board, m: Machine, slot: int, log: Log) -> None:
    """Invariant 5, at the moment the hotplug block ejects ``slot``."""
    c = m.cpus[slot]
    apic = board.cfg.apic_id(slot)
    if apic in firmware_table(board, m):
        log.violate("eject-safe", f"cpu{slot} (APIC ID {apic}) ejected while the firmware still counts it")
    elif not (c.smm and c.mode == HALTED and not c.intr):
        where = "in SMM" if c.smm else "outside SMM"
        log.violate(
            "eject-safe",
            f"cpu{slot} ejected while not parked ({where}, {'halted' if c.mode == HALTED else 'running'})",
        )
