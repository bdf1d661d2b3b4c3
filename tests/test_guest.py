"""The guest OS as Linux 6.1 runs on QEMU 7.2: the register sequence of a hot-add, the AML mutex
CPLK shared by the GPE handler on CPU 0 and the hotplug worker on another CPU, and OVMF's pen."""

from __future__ import annotations

import pytest

from smm_hotplug.checker.cases import place
from smm_hotplug.checker.explore import explore
from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DESIGNS
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import osmem
from smm_hotplug.hw.trace import NullLog
from smm_hotplug.hw.views import CPU
from smm_hotplug.simulator import fixed_operator, simulate
from smm_hotplug.world import Scenario, System, World

SHIPPED = DESIGNS["smram-default-smbase"]
CPLK = f"[0x{osmem.CPLK:x}]"
ACQUIRE = f"cmpxchg8 {CPLK} 0x0->"
RELEASE = f"write8 {CPLK} <- 0x0"

# The OS's accesses of one hot-add into slot 2 (2 boot CPUs of 4), per CPU.
# CPU 0, the SCI: GPE0_STS, then QEMU's CSCN under CPLK — CDAT read twice per GET_NEXT, the
# wrap-around that ends the scan, the hotplug SMI before the Notify, clearing CINS — and the
# reschedule IPI that starts the hotplug worker.
CPU0_SCAN = [
    "inb 0x0620 -> 0x04",
    "outb 0x0620 <- 0x04",
    ACQUIRE,
    "outl 0x0cd8 <- 0x00000000",
    "outb 0x0cdd <- 0x00",
    "inl 0x0ce0 -> 0x00000002",
    "inl 0x0ce0 -> 0x00000002",
    "inb 0x0cdc -> 0x03",
    "outl 0x0cd8 <- 0x00000003",
    "outb 0x0cdd <- 0x00",
    "inl 0x0ce0 -> 0x00000002",
    "outb 0x00b2 <- 0x04",
    "outl 0x0cd8 <- 0x00000002",
    "outb 0x0cdc <- 0x02",
    RELEASE,
    "fixed IPI -> APIC 1 vector 0xfd",
]
_STA = [ACQUIRE, "outl 0x0cd8 <- 0x00000002", "inb 0x0cdc -> 0x01", RELEASE]
# CPU 1, the hotplug worker: _STA three times, _OST(1, 0), then the CPU is onlined.
CPU1_WORK = [
    *_STA,
    *_STA,
    *_STA,
    ACQUIRE,
    "outl 0x0cd8 <- 0x00000002",
    "outb 0x0cdd <- 0x01",
    "outl 0x0ce0 <- 0x00000001",
    "outb 0x0cdd <- 0x02",
    "outl 0x0ce0 <- 0x00000000",
    RELEASE,
    "INIT IPI -> APIC 2",
    "SIPI IPI -> APIC 2 vector 0x09",
    "SIPI IPI -> APIC 2 vector 0x09",
]


def _port(text: str) -> bool:
    return text.startswith(("inb ", "inw ", "inl ", "outb ", "outw ", "outl "))


def os_accesses(res, slot: int) -> list[str]:
    """Port accesses, IPIs and CPLK operations of CPU ``slot`` outside SMM after the plug."""
    out, in_smm, plugged = [], False, False
    for st in res.steps:
        for ev in st.events:
            plugged = plugged or "device_add" in ev.text
            if ev.actor != f"cpu{slot}":
                continue
            if ev.kind == "smi":
                in_smm = True
            elif ev.kind == "rsm":
                in_smm = False
            elif plugged and not in_smm and (ev.kind == "ipi" or CPLK in ev.text or _port(ev.text)):
                out.append(ev.text.split(": ")[0] if ev.text.startswith("cmpxchg") else ev.text)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_hot_add_is_the_register_sequence_linux_and_qemus_aml_produce(seed):
    res = simulate(System(SHIPPED, Scenario(2, 4, 1, 0)), seed=seed, detail=True, operator=fixed_operator)
    assert res.outcome == "finished" and res.ok
    cpu0 = [a if not a.startswith(ACQUIRE) else ACQUIRE for a in os_accesses(res, 0)]
    cpu1 = [a if not a.startswith(ACQUIRE) else ACQUIRE for a in os_accesses(res, 1)]
    assert cpu0 == CPU0_SCAN
    assert cpu1 == CPU1_WORK
    # The new CPU is brought online only after _STA x3 and _OST, by the worker.
    text = [ev.text for st in res.steps for ev in st.events]
    onlining = next(i for i, t in enumerate(text) if t.startswith("OS: onlining CPU 2"))
    assert text.index("ACPI_DEVICE_OST slot 2 event 0x1 status 0x0") < onlining


def test_the_hot_add_sequence_is_what_simulate_verbose_prints():
    from conftest import run_cli

    out = run_cli("simulate", "--plug", "1", "--unplug", "0", "--seed", "2", "--verbose")  # seed 2: slot 2
    assert out.returncode == 0, out.stderr
    lines = [line.split(None, 2)[2] for line in out.stdout.splitlines() if line[:5].strip().isdigit()]
    start = next(i for i, line in enumerate(lines) if "device_add" in line)
    seen = iter(lines[start:])
    for want in [
        "OS: CPU hotplug GPE; scanning CPUs (CSCN)",
        *CPU0_SCAN[3:12],
        "OS: Notify(CPU 2, device check)",
    ]:
        assert any(line.startswith(want) for line in seen), want
    for want in ["hotplug work on cpu1: device check of CPU 2", "inb 0x0cdc -> 0x01", "inb 0x0cdc -> 0x01"]:
        assert any(want in line for line in seen), want
    for want in ["inb 0x0cdc -> 0x01", "ACPI_DEVICE_OST slot 2 event 0x1 status 0x0", "INIT IPI -> APIC 2"]:
        assert any(want in line for line in seen), want


def test_the_eject_path_is_ost_in_progress_offline_ej0_sta_ost():
    res = simulate(System(SHIPPED, Scenario(2, 4, 1, 1)), seed=0, operator=fixed_operator)
    assert res.outcome == "finished" and res.ok
    text = [ev.text for st in res.steps for ev in st.events]
    start = next(i for i, t in enumerate(text) if "device_del" in t)
    order = [
        "OS: Notify(CPU 2, eject request)",
        "ACPI_DEVICE_OST slot 2 event 0x3 status 0x80",
        "OS: offlining CPU 2",
        "OS: CPU with APIC ID 2 offline",
        "OS: _EJ0 CPU 2: firmware-driven eject",
        "DEVICE_DELETED cpu2",
        "ACPI_DEVICE_OST slot 2 event 0x3 status 0x0",
    ]
    at = [next(i for i, t in enumerate(text) if i > start and t.startswith(o)) for o in order]
    assert at == sorted(at)


# -- CPLK: the GPE handler and the worker interleave, serialised only by the mutex --------------
def _at(system: System, w: World, slot: int) -> tuple[str, str] | None:
    c = w.m.cpus[slot]
    return None if c.smm else place(system, w, slot)


def _cplk(system: System, w: World) -> int:
    return system.plat.mem_read(w.m, osmem.CPLK, 1, CPU)


def cscn_waits_for_the_worker(system: System, w: World) -> bool:
    return _at(system, w, 0) == ("os.irq", "scan_lock") and _cplk(system, w) == 2


def worker_waits_for_cscn(system: System, w: World) -> bool:
    where = _at(system, w, 1)
    held_by_cpu0 = where is not None and where[0] == "os.hotplug" and _cplk(system, w) == 1
    return held_by_cpu0 and system.plat.cpu_step(w.m, 1, NullLog()) is None


@pytest.mark.parametrize("goal", [cscn_waits_for_the_worker, worker_waits_for_cscn])
def test_the_scan_on_cpu0_and_the_worker_on_cpu1_contend_for_cplk(goal):
    """With plugs at any moment, a second CSCN runs while the worker evaluates the first CPU's
    methods: each of them may find the mutex held by the other."""
    system = CheckSetup("smram-default-smbase", Scenario(2, 4, 2, 0), ("concurrent-plug",)).system()
    out = explore(system, (), cases={"goal": goal}, goal="goal")
    assert out.verdict == "reached"
    benign = CheckSetup("smram-default-smbase", Scenario(2, 4, 2, 0)).system()
    assert explore(benign, (), cases={"goal": goal}, goal="goal").verdict == "holds"  # never


# -- OVMF's Post-SMM Pen ---------------------------------------------------------------------------
def test_the_pen_is_the_page_the_firmware_allocates_below_1_mib():
    assert FW.post_smm_pen_page() == 0x9F000
    assert FW.post_smm_pen_page(frozenset({0x9F000, 0x9E000})) == 0x9D000
    res = simulate(System(SHIPPED, Scenario(2, 4, 1, 0)), seed=0, detail=True, operator=fixed_operator)
    text = [ev.text for st in res.steps for ev in st.events]
    assert "firmware: Post-SMM Pen at 0x9f000" in text
    assert "SIPI IPI -> APIC 2 vector 0x9f" in text and "write8 [0x9ffff] <- 0x1" in text
    # The OS is told to keep off it: E820 reserves the page.
    lay_e820 = [(b, n, t) for b, n, t in _e820(res) if b <= 0x9F000 < b + n]
    assert lay_e820 == [(lay_e820[0][0], lay_e820[0][1], 2)]


def _e820(res) -> list[tuple[int, int, int]]:
    plat = res.system.plat
    m = res.final.m
    count = plat.mem_read(m, FW.HANDOFF_E820_COUNT, 4, CPU)
    out = []
    for i in range(count):
        at = FW.HANDOFF_E820 + 20 * i
        out.append(
            (
                plat.mem_read(m, at, 8, CPU),
                plat.mem_read(m, at + 8, 8, CPU),
                plat.mem_read(m, at + 16, 4, CPU),
            )
        )
    return out


def test_a_full_package_of_new_cpus_is_handled_and_the_scan_goes_on(monkeypatch):
    """CSCN collects at most 255 new CPUs (CNEW) before it raises the SMI and notifies them, then
    scans on from where it stopped (has_job); with a package of one, two CPUs plugged together
    take two SMIs in one scan, and the flow still holds."""
    from smm_hotplug.checker.run import run_check
    from smm_hotplug.guest import acpi

    monkeypatch.setattr(acpi, "CNEW_MAX", 1)
    setup = CheckSetup("smram-default-smbase", Scenario(1, 3, 2, 0), ("concurrent-plug",))
    system = setup.system()

    def resumed(system: System, w: World) -> bool:
        c = w.m.cpus[0]
        return (
            isinstance(c.regs, acpi.Cscn)
            and _at(system, w, 0) == ("os.irq", "scan_cmd")
            and c.regs.added == ()
            and c.regs.uid == 2
        )

    assert explore(system, (), cases={"resumed": resumed}, goal="resumed").verdict == "reached"
    assert run_check(setup).verdict == "holds"
