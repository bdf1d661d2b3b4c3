"""Per-slot SMBASE registers in the CPU hotplug block (design "hotplug-smbase-reg").

Not a QEMU device: the extension one 2019 design proposed.  A 32-bit register right after the
modern block (0x0cd8 + 0xc) holds the SMBASE the VMM gives the CPU the selector names when it
is plugged; only SMM may write it.  It shares the hotplug block's selector and keeps its
values in the block's state (``CpuHp.smbase_regs``).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.cpuhp import SMBASE_REG, SMBASE_REG_LEN, CpuHp
from smm_hotplug.hw.effects import NONE, Effects, Note
from smm_hotplug.hw.iospace import Ops

OFFSET = SMBASE_REG  # from the hotplug block's base


class Links(NamedTuple):
    max_cpus: int
    smm: bool  # the access comes from a CPU in SMM (QEMU: MemTxAttrs.secure)


def read(hp: CpuHp, links: Links, offset: int, size: int) -> tuple[CpuHp, int, Effects]:
    if hp.selector >= links.max_cpus:
        return hp, 0, NONE
    return hp, hp.smbase_regs[hp.selector], NONE


def write(hp: CpuHp, links: Links, offset: int, size: int, value: int) -> tuple[CpuHp, Effects]:
    if hp.selector >= links.max_cpus:
        return hp, NONE
    if not links.smm:
        return hp, (Note("hw", "hotplug SMBASE register write from outside SMM ignored"),)
    regs = list(hp.smbase_regs)
    regs[hp.selector] = value
    return hp._replace(smbase_regs=tuple(regs)), NONE


OPS = Ops("cpu-smbase-regs", SMBASE_REG_LEN, read, write, valid_min=4)
