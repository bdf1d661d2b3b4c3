"""The three views of memory: a CPU in SMM, a CPU outside SMM (and qtest), a DMA bus master.

Low RAM is ordinary RAM in every view except where the MCH makes it SMRAM — TSEG at the top of
low RAM, and the default-SMBASE window 0x30000-0x4FFFF once it is locked — which only the SMM
view reaches; outside SMM it reads all-ones and drops writes (QEMU's blackhole region).  With
the "dma-guard" design's chipset guard, DMA cannot reach 0x30000-0x3FFFF either.  Above low RAM
up to the flash is unassigned; the firmware flash sits below 4 GiB; RAM beyond 4 GiB follows.

Every access that reaches a range the firmware has claimed as SMRAM from outside SMM is
reported as an ``smram-isolation`` violation (ghost state ``Machine.smram_claims``), whatever
the chipset made of it.
"""

from __future__ import annotations

from smm_hotplug.hw import mch
from smm_hotplug.hw.board import Board
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.state import Machine
from smm_hotplug.hw.trace import Log

# Access views.
SMM = "smm"  # a CPU in SMM
CPU = "cpu"  # a CPU outside SMM (and qtest)
DMA = "dma"  # a bus-master device

# Decode results.
RAM = "ram"
BLACKHOLE = "blackhole"  # SMRAM seen from outside SMM: reads all-ones, writes dropped
UNASSIGNED = "unassigned"
ROM = "rom"

ROM_BASE = 0xFFFC0000  # firmware flash (256 KiB below 4 GiB)
ADDR_MASK = (1 << 64) - 1  # physical addresses wrap at 2^64
DMA_GUARD = (0x30000, 0x40000)  # what the "dma-guard" design keeps DMA away from

DECODE_CACHE_SIZE = 1 << 16


def decode(board: Board, m: Machine, addr: int, view: str) -> tuple[str, int]:
    """What ``addr`` reaches in ``view``, and where that section ends."""
    # Only the chipset registers decide, and programs touch few addresses: memoized (and
    # emptied when it grows, as it can under arbitrary qtest accesses).
    key = (m.mch, addr, view)
    cache = board.memo_decode
    got = cache.get(key)
    if got is None:
        if len(cache) >= DECODE_CACHE_SIZE:
            cache.clear()
        got = cache[key] = _decode(board, m.mch, addr, view)
    return got


def _tseg(board: Board, mc: mch.Mch) -> tuple[int, int] | None:
    key = (mc.smram, mc.esmramc)
    cache = board.memo_tseg
    if key not in cache:
        cache[key] = mch.tseg_range(mc, board.cfg)
    return cache[key]


def _decode(board: Board, mc: mch.Mch, addr: int, view: str) -> tuple[str, int]:
    cfg = board.cfg
    low = cfg.below_4g
    if addr < low:
        end = low
        tseg = _tseg(board, mc)
        if tseg is not None:
            tb, te = tseg
            if addr >= tb:
                return (RAM if view == SMM else BLACKHOLE), te
            end = tb
        if view == DMA and cfg.hw.dma_guard_default_smbase:
            gb, ge = DMA_GUARD
            if gb <= addr < ge:
                return BLACKHOLE, ge
            if addr < gb:
                end = min(end, gb)
        if mch.window_locked(mc):
            wb = mch.WINDOW_BASE
            we = wb + mch.WINDOW_SIZE
            if wb <= addr < we:
                return (RAM if view == SMM else BLACKHOLE), we
            if addr < wb:
                end = min(end, wb)
        return RAM, end
    if addr < ROM_BASE:
        return UNASSIGNED, ROM_BASE
    if addr < 1 << 32:
        return ROM, 1 << 32
    if addr < (1 << 32) + cfg.above_4g:
        return RAM, (1 << 32) + cfg.above_4g
    return UNASSIGNED, 1 << 64


def _check_isolation(m: Machine, addr: int, size: int, view: str, acc: str, log: Log) -> None:
    if view == SMM:
        return
    for base, length in m.smram_claims:
        if addr < base + length and base < addr + size:
            who = "DMA" if view == DMA else "non-SMM"
            log.violate(
                "smram-isolation",
                f"{who} {acc} of 0x{addr:x}+{size} reached SMRAM [0x{base:x}, 0x{base + length:x})",
            )
            return


def read(board: Board, m: Machine, addr: int, size: int, view: str, log: Log | None = None) -> int:
    value = 0
    done = 0
    while done < size:
        a = (addr + done) & ADDR_MASK
        kind, end = decode(board, m, a, view)
        n = min(size - done, end - a)
        if kind == RAM:
            if log is not None:
                _check_isolation(m, a, n, view, "read", log)
            part = m.mem.read(a, n)
        elif kind == BLACKHOLE:
            part = (1 << (8 * n)) - 1
        else:
            part = 0
        value |= part << (8 * done)
        done += n
    return value


def write(
    board: Board, m: Machine, addr: int, size: int, value: int, view: str, writer: str, log: Log | None
) -> Machine:
    mem = m.mem
    done = 0
    while done < size:
        a = (addr + done) & ADDR_MASK
        kind, end = decode(board, m, a, view)
        n = min(size - done, end - a)
        if kind == RAM:
            if log is not None:
                _check_isolation(m, a, n, view, "write", log)
            mem = mem.write(a, n, (value >> (8 * done)) & ((1 << (8 * n)) - 1), writer)
        done += n
    return m if mem is m.mem else m._replace(mem=mem)


def fill(
    board: Board, m: Machine, addr: int, size: int, byte: int, view: str, writer: str, log: Log | None
) -> Machine:
    """REP STOSB: ``size`` bytes of ``byte`` (a write of that many equal bytes)."""
    if size <= 0:
        return m
    value = int.from_bytes(bytes([byte & 0xFF]) * size, "little")
    return write(board, m, addr, size, value, view, writer, log)


def put(board: Board, m: Machine, addr: int, obj: Obj, view: str, log: Log | None) -> Machine:
    """Store a symbolic object (code, saved register image) at ``addr``."""
    kind, _ = decode(board, m, addr, view)
    if kind != RAM:
        return m
    if log is not None:
        _check_isolation(m, addr, obj.size, view, "write", log)
    return m._replace(mem=m.mem.put(addr, obj))


def object_at(board: Board, m: Machine, addr: int, view: str) -> Obj | None:
    kind, _ = decode(board, m, addr, view)
    if kind == ROM:
        return board.rom.get(addr)
    if kind != RAM:
        return None
    return m.mem.object_at(addr)


def fetch(board: Board, m: Machine, addr: int, view: str) -> tuple[Obj | None, str | None]:
    """The code a CPU executes at ``addr`` and who wrote those bytes."""
    kind, _ = decode(board, m, addr, view)
    if kind == ROM:
        obj = board.rom.get(addr)
        return obj, ("firmware" if obj is not None else None)
    if kind != RAM:
        return None, None
    obj = m.mem.object_at(addr)
    if obj is not None and obj.kind == "code":
        return obj, obj.writer
    return None, m.mem.writer(addr)
