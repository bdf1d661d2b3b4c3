"""The guest OS's memory: where its code and data sit, and the data its CPUs share.

The OS keeps per-CPU state (online, asked to go offline, gone offline), the AML mutex that QEMU's
DSDT declares for the CPU hotplug device (``CPLK``), whether CPU 0 is inside the ACPI event
handler (Linux: kacpid and kacpi_notify still have work, what ``acpi_os_wait_events_complete``
waits for), and the ordered hotplug work queue (Linux: ``kacpi_hotplug_wq``, an ordered
workqueue whose one worker may run on any CPU).  All of it is ordinary OS memory: CPUs share it
through atomic accesses, so the checker explores how they interleave.
"""

from __future__ import annotations

from typing import NamedTuple

OS_ENTRY = 0x100000  # os.kernel
OS_IRQ = 0x110000  # os.irq: interrupt handlers, the GPE handler and CSCN
OS_HOTPLUG = 0x120000  # os.hotplug: the hotplug worker and the AML methods it evaluates
OS_TRAMPOLINE = 0x9000  # os.ap_start, SIPI vector 0x09
OS_DATA = 0x200000
OS_GLOBALS = OS_DATA + 0x1000  # pmbase u32, flags u8 (copied from the firmware's tables)
CPLK = OS_DATA + 0x1100  # u8: 0 free, else the owner's slot + 1 (AML Mutex CPLK)
ACPI_BUSY = OS_DATA + 0x1101  # u8: 1 while CPU 0 handles an ACPI event (GPE method + Notify)
HP_QUEUE = OS_DATA + 0x1200  # the hotplug work queue (a ``HotplugQueue`` value)

# Interrupt vectors of the OS (Linux arch/x86/include/asm/irq_vectors.h).
OFFLINE_VECTOR = 0xFB  # CALL_FUNCTION_SINGLE_VECTOR: ask a CPU to go offline
WAKE_VECTOR = 0xFD  # RESCHEDULE_VECTOR: wake an idle CPU to run a worker

# Hotplug work items: the ACPI notification that queued them (ACPI 6.x §5.6.6).
DEVICE_CHECK = 1  # Notify(CPU, 1): hot-add
EJECT_REQUEST = 3  # Notify(CPU, 3): hot-remove


def online_flag(apic: int) -> int:
    return OS_DATA + 0x10 * apic


def offline_request(apic: int) -> int:
    return OS_DATA + 0x10 * apic + 1


def offline_ack(apic: int) -> int:
    return OS_DATA + 0x10 * apic + 2


class HotplugQueue(NamedTuple):
    """The ordered hotplug workqueue: its worker's CPU (None while no worker runs) and the
    queued items, oldest first, each (DEVICE_CHECK | EJECT_REQUEST, CPU uid)."""

    worker: int | None = None
    items: tuple[tuple[int, int], ...] = ()


def queue(b) -> HotplugQueue:
    obj = b.rd_obj(HP_QUEUE)
    return obj.value if obj is not None and isinstance(obj.value, HotplugQueue) else HotplugQueue()


def set_queue(b, q: HotplugQueue) -> None:
    b.put_sym(HP_QUEUE, q, 0x40)


def acquire_cplk(b) -> bool:
    """Acquire(CPLK, 0xFFFF): LOCK CMPXCHG on the mutex; False while another CPU holds it (the
    caller waits: an AML Acquire without timeout sleeps until the owner releases)."""
    return b.cmpxchg(CPLK, 1, 0, b.slot + 1)


def release_cplk(b) -> None:
    b.wr(CPLK, 1, 0)


def os_online(b, slot: int) -> bool:
    apic = b.cfg.apic_id(slot)
    online, going = b.rd_many([online_flag(apic), offline_request(apic)], 1)
    return online == 1 and going == 0


def pick_worker(b, avoid: int | None) -> int:
    """The CPU the scheduler runs the hotplug worker on: the first online CPU other than the
    boot CPU, whose kacpid work it would otherwise wait behind, and other than ``avoid`` (a CPU
    the work is about to take offline); the boot CPU when there is no other."""
    for slot in range(1, b.cfg.max_cpus):
        if slot != avoid and os_online(b, slot):
            return slot
    return 0
