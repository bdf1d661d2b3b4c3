"""Each accelerator profile's rules, one by one: build the CPU state, send the events, compare.

The rule tables are hw.accel_rules.RULES; this drives the model (hw.apic delivery and
acceptance, hw.core) through each row and checks the outcome — the CPU's state, where it
executes next, what it still has latched, the return address an SMM entry saved, what RSM did
to SMBASE.  The README's table of differences is the tables' rendering.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smm_hotplug.code import PROGRAMS, program
from smm_hotplug.firmware.image import RESET_PC, flash
from smm_hotplug.hw import accel_rules as R
from smm_hotplug.hw import apic, core
from smm_hotplug.hw.config import ACCEL_KVM, ACCEL_TCG, ACCELS, HardwareFeatures, platform_config
from smm_hotplug.hw.cpu import (
    DEFAULT_SMBASE,
    DM_FIXED,
    DM_INIT,
    DM_NMI,
    DM_SIPI,
    DM_SMI,
    HALTED,
    NO_SIPI,
    RUNNING,
    SMI_HANDLER_OFFSET,
    SS_REVISION_ID,
    SS_RIP,
    SS_SMBASE,
    WAIT_SIPI,
    Cpu,
    hot_added_cpu,
)
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.platform import Platform
from smm_hotplug.hw.state import Machine, set_cpu
from smm_hotplug.hw.trace import Log, NullLog
from smm_hotplug.hw.views import CPU, SMM

README = Path(__file__).resolve().parent.parent / "README.md"
AP, BSP = 1, 0
CODE = 0x9000  # where a running CPU is (a program that just spins)
IDT = 0x9100  # the OS's interrupt entry (NMI handler through the IDT)
IVT_NMI = 0x9200  # where the real-mode IVT's vector 2 points
VECTORS = (0x9A, 0x9B)  # SIPI vectors: first and second
NEW_SMBASE = 0x50000  # what the SMM code put in the save-state map

if "test.accel.spin" not in PROGRAMS:
    spin = program("test.accel.spin", "os", size=0x100)

    @spin.step("entry")
    def _spin(b, r):
        return None  # never executed here: the rules are about events, not code

    @spin.step("after_hlt")
    def _after_hlt(b, r):
        return None


def _platform(accel: str) -> Platform:
    return Platform(platform_config(2, 4, hw=HardwareFeatures(accel=accel)), rom=flash(), reset_pc=RESET_PC)


def _prepare(plat: Platform, state: str) -> tuple[Machine, int]:
    """A machine with a CPU in ``state`` (slot AP, or the BSP's slot)."""
    m = plat.power_on()
    for addr in (CODE, IDT, IVT_NMI, DEFAULT_SMBASE + SMI_HANDLER_OFFSET):
        m = plat.mem_put(m, addr, Obj("code", "test.accel.spin", 0x100, "firmware"), SMM, None)
    m = plat.mem_write(m, 4 * 2, 4, (IVT_NMI >> 4) << 16, CPU, "os", None)  # IVT[2] = 0920:0000
    running = Cpu(mode=RUNNING, pc=(CODE, "entry"), intr=True, idt=IDT)
    if state == R.BSP:
        return set_cpu(m, BSP, running), BSP
    cpu = {
        R.ABSENT: Cpu(),
        R.HOT_ADDED: hot_added_cpu(uninit=apic.fresh_ap_uninit(plat)),
        R.WAIT_SIPI: Cpu(mode=WAIT_SIPI),
        R.RUNNING: running,
        R.HALTED: running._replace(mode=HALTED, pc=(CODE, "after_hlt")),
    }.get(state, running)
    m = set_cpu(m, AP, cpu)
    if state in (R.SMM, R.SMM_HALTED):
        m = plat.deliver(m, AP, DM_SMI, 0, Log())
        m = _settle(plat, m, AP)
        m = plat.mem_write(m, DEFAULT_SMBASE + SS_SMBASE, 4, NEW_SMBASE, SMM, "firmware", None)
        if state == R.SMM_HALTED:
            c = m.cpus[AP]
            m = set_cpu(m, AP, c._replace(mode=HALTED, pc=(c.pc[0], "after_hlt")))
    return m, AP


def _settle(plat: Platform, m: Machine, slot: int) -> Machine:
    """Let the CPU take, step by step, whatever it takes by itself (it executes no code)."""
    for _ in range(8):
        if apic.pending(plat, m, slot) is None:
            return m
        m = core.cpu_step(plat, m, slot, Log())
    raise AssertionError("the CPU keeps taking events")


EVENTS = {
    R.SMI: (DM_SMI, 0),
    R.NMI: (DM_NMI, 0),
    R.INIT: (DM_INIT, 0),
    R.FIXED: (DM_FIXED, 0x40),
}


def _run(plat: Platform, m: Machine, slot: int, events: tuple[str, ...], log: type[Log] = Log) -> Machine:
    """The CPU after ``events``, each IPI delivered with a fresh ``log`` (a recording one by
    default; the checker's NullLog takes deliveries from hw.apic's memo table)."""
    sipis = iter(VECTORS)
    for event in events:
        if event == "|":
            m = _settle(plat, m, slot)
        elif event in (R.RSM, R.RSM_NO_BIT17):
            m = _settle(plat, m, slot)  # it takes what is pending before it executes anything
            if m.cpus[slot].smm:
                if event == R.RSM_NO_BIT17:
                    base = m.cpus[slot].smbase
                    m = plat.mem_write(m, base + SS_REVISION_ID, 4, 0x64, SMM, "firmware", None)
                m = core.rsm(plat, m, slot, Log())
        elif event == R.SIPI:
            m = plat.deliver(m, slot, DM_SIPI, next(sipis), log())
        else:
            mode, vector = EVENTS[event]
            m = plat.deliver(m, slot, mode, vector, log())
    return _settle(plat, m, slot)


def _where(plat: Platform, pc, before: set, last_vector: int) -> str:
    if pc is None:
        return R.NOWHERE
    if pc in before:
        return R.SAME
    if pc == (DEFAULT_SMBASE + SMI_HANDLER_OFFSET, "entry") or pc == (
        NEW_SMBASE + SMI_HANDLER_OFFSET,
        "entry",
    ):
        return R.SMI_HANDLER
    if pc in ((IDT, "entry"), (IVT_NMI, "entry")):
        return R.NMI_HANDLER
    if pc == (last_vector << 12, "entry"):
        return R.SIPI_VECTOR
    if pc == plat.reset_pc:
        return R.RESET_VECTOR
    return f"somewhere else: {pc}"


def _observe(plat: Platform, m0: Machine, m: Machine, slot: int, events: tuple[str, ...]) -> R.Outcome:
    c0, c = m0.cpus[slot], m.cpus[slot]
    before = {c0.pc}
    if c0.smm:  # where SMM interrupted it
        rip = plat.mem_object(m0, c0.smbase + SS_RIP, SMM)
        before.add(rip.value[1])
    last = VECTORS[events.count(R.SIPI) - 1] if R.SIPI in events else 0
    if not c.present:
        state = R.ABSENT
    elif c.mode == WAIT_SIPI:
        state = R.HOT_ADDED if c.uninit else R.WAIT_SIPI
    elif c.smm:
        state = R.SMM_HALTED if c.mode == HALTED else R.SMM
    else:
        state = R.HALTED if c.mode == HALTED else R.RUNNING
    latched = {
        name
        for name, on in ((R.SMI, c.smi), (R.NMI, c.nmi), (R.INIT, c.init), (R.SIPI, c.sipi != NO_SIPI))
        if on
    }
    if c.irq:
        latched.add(R.FIXED)
    at = _where(plat, c.pc, before, last)
    rsm = R.RSM in events or R.RSM_NO_BIT17 in events
    saved = smbase = None
    if at == R.SMI_HANDLER and (not c0.smm or rsm):  # it entered SMM during the rule
        rip = plat.mem_object(m, c.smbase + SS_RIP, SMM)
        saved = _where(plat, rip.value[1], before, last)
    if rsm and c0.smm:
        smbase = "reloaded" if c.smbase == NEW_SMBASE else "kept" if c.smbase == c0.smbase else hex(c.smbase)
    return R.Outcome(state, at, frozenset(latched), saved, smbase)


CASES = [
    pytest.param(accel, rule, id=f"{accel}: {rule.state} + {', '.join(rule.events)}")
    for accel in ACCELS
    for rule in R.RULES[accel]
]


@pytest.mark.parametrize(("accel", "rule"), CASES)
def test_rule(accel, rule):
    plat = _platform(accel)
    m0, slot = _prepare(plat, rule.state)
    m = _run(plat, m0, slot, rule.events)
    got = _observe(plat, m0, m, slot, rule.events)
    assert got == rule.outcome, f"{rule.text} ({rule.source})"


@pytest.mark.parametrize("accel", ACCELS)
def test_a_delivery_from_the_memo_table_is_the_delivery_itself(accel):
    """The checker's logs record nothing, so its IPIs are taken from a memo table keyed on the
    target CPU: every rule's events leave the same machine as recorded deliveries, on a first
    run (filling the table) and a second (answered from it)."""
    plat = _platform(accel)
    single = [(mode, vector) for mode in (DM_SMI, DM_NMI, DM_INIT, DM_FIXED) for vector in (0, 0x40)]
    single += [(DM_SIPI, vector) for vector in VECTORS]
    for _ in range(2):
        for rule in R.RULES[accel]:
            m0, slot = _prepare(plat, rule.state)
            assert _run(plat, m0, slot, rule.events, NullLog) == _run(plat, m0, slot, rule.events), rule.text
            for mode, vector in single:
                memo = plat.deliver(m0, slot, mode, vector, NullLog())
                assert memo == plat.deliver(m0, slot, mode, vector, Log()), (rule.state, mode, vector)
    assert plat.memo("apic.deliver"), "the deliveries went past the memo table"


def test_both_profiles_cover_the_same_situations_and_every_state_event_pair():
    keys = {accel: {(r.state, r.events) for r in R.RULES[accel]} for accel in ACCELS}
    assert keys[ACCEL_KVM] == keys[ACCEL_TCG]
    for accel in ACCELS:
        assert len(keys[accel]) == len(R.RULES[accel]), "a situation is listed twice"
    states = (R.ABSENT, R.HOT_ADDED, R.WAIT_SIPI, R.RUNNING, R.HALTED, R.SMM, R.SMM_HALTED)
    for state in states:
        for event in (R.SMI, R.NMI, R.INIT, R.SIPI):
            assert (state, (event,)) in keys[ACCEL_KVM], (state, event)


def test_every_rule_names_its_source():
    for accel in ACCELS:
        for rule in R.RULES[accel]:
            assert rule.source and "|" not in rule.source


def test_the_readme_table_of_differences_is_the_rules():
    table = R.differences_markdown()
    assert table in README.read_text(), "README's accelerator table is out of date:\n" + table
    assert len(R.differences()) >= 15
