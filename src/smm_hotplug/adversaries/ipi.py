"""Adversaries that use the local APICs of the CPUs the OS runs: IPIs.

``os-ipi`` is the general one: the OS may send INIT, SIPI, SMI and NMI IPIs to any CPU, or to all
but the sending one, in any order and at any time.  Its choice set is finite and complete for
what the model can tell apart:

* destinations — every present CPU's APIC ID (the sender's own included: what a directed IPI
  does does not depend on which OS CPU sends it), and "all excluding self" from each CPU the
  OS runs, where that reaches more than one CPU (otherwise it is one of the directed IPIs);
* delivery modes — INIT, SMI, NMI and SIPI (a fixed IPI only interrupts code the OS runs
  anyway; an INIT de-assert is ignored by both accelerators).  NMIs go only to CPUs the OS
  does not run at that moment: on a CPU it runs, the NMI runs the OS's own handler, which
  returns where it was (IRET) — a delay, and every delay of that CPU is already among the
  schedules the checker explores;
* SIPIs go only to CPUs a SIPI can start — waiting for one, or with an INIT pending (which a
  SIPI may precede, hw.apic).  To any other CPU a SIPI is dropped, at most after waking a halted
  CPU, which continues after its HLT — and every HLT in the model's software is in a loop — so
  the OS gains nothing it could not get by sending the INIT first;
* SIPI vectors — a SIPI starts a CPU in real mode at vector x 0x1000, so what matters is the
  code at that page: the OS's own code (one representative, ``os.rogue``, written there by the
  same action: any code the OS runs on a CPU it started is code it could run on its other
  CPUs) and the firmware's own SIPI targets below 1 MiB, where a CPU outside SMM can fetch
  them: the post-SMM pen, the boot AP park, the smbase-msr trampoline.  A page without code
  only stops the CPU, which an INIT alone already does.  Firmware code that is not a SIPI
  target (the SMI entry at 0x38000 where it is ordinary RAM, the boot relocation's RSM hook)
  would run in a CPU mode it was not written for, which the model does not represent; those
  pages are left out.

The narrower ``os-early-smi``, ``os-early-init-sipi`` and ``os-init-in-smm`` stay as named
special cases of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from smm_hotplug.adversaries.base import Action, Adversary, adv_put, os_bus, os_cpus
from smm_hotplug.adversaries.payload import ROGUE_PAGE
from smm_hotplug.firmware import layout as FW
from smm_hotplug.guest import kernel
from smm_hotplug.hw.cpu import (
    ALL_EXCLUDING_SELF,
    DELIVERY_MODE_NAMES,
    DM_INIT,
    DM_NMI,
    DM_SIPI,
    DM_SMI,
    WAIT_SIPI,
)
from smm_hotplug.hw.memory import Obj
from smm_hotplug.hw.views import CPU

# The firmware's SIPI targets below 1 MiB (firmware/layout.py): the post-SMM pen (the page the
# firmware allocated, which the OS sees reserved in its memory map), the smbase-msr trampoline and
# the boot AP park; only those holding code a CPU outside SMM can fetch at the moment are offered.
FIRMWARE_PAGES = (FW.post_smm_pen_page(), FW.MSR_TRAMPOLINE, FW.AP_PARK)
ROGUE = Obj("code", "os.rogue", 0x100, "os")


def _rogue_page(system, m, log):
    return adv_put(system, m, ROGUE_PAGE, ROGUE, CPU, log)


def sipi_vectors(system, m) -> list[tuple[int, str]]:
    """(vector, what runs there) for the SIPIs ``os-ipi`` may send."""
    out = [(ROGUE_PAGE >> 12, "its own code")]
    for page in FIRMWARE_PAGES:
        obj, writer = system.plat.fetch(m, page, CPU)
        if obj is not None and obj.kind == "code" and writer == "firmware":
            out.append((page >> 12, str(obj.value)))
    return out


@dataclass(frozen=True)
class OsIpi(Adversary):
    def actions(self, system, w):
        m = w.m
        cfg = system.cfg
        present = [s for s, c in enumerate(m.cpus) if c.present]
        runs = os_cpus(system, m)
        startable = [s for s in present if _startable(m.cpus[s])]
        # (destination, its name, the sending CPU or None for any, whether an NMI and whether a
        # SIPI can matter there)
        dests = [(cfg.apic_id(s), f"cpu{s}", None, s not in runs, s in startable) for s in present]
        if len(present) > 2:  # all-but-sender reaches at least two CPUs
            for sender in runs:
                others = [s for s in present if s != sender]
                nmi = any(s not in runs for s in others)
                sipi = any(s in startable for s in others)
                dests.append((ALL_EXCLUDING_SELF, f"all but cpu{sender}", sender, nmi, sipi))
        vectors = sipi_vectors(system, m)
        out: list[tuple[str, Action]] = []
        for dest, name, sender, nmi, sipi in dests:
            for mode in (DM_INIT, DM_SMI, DM_NMI) if nmi else (DM_INIT, DM_SMI):
                desc = f"the OS sends an {DELIVERY_MODE_NAMES[mode]} IPI to {name}"
                out.append((desc, _ipi(dest, mode, 0, sender)))
            for vector, what in vectors if sipi else ():
                desc = f"the OS sends a SIPI to {name}, vector 0x{vector:02x} ({what})"
                out.append((desc, _ipi(dest, DM_SIPI, vector, sender)))
        return out


def _startable(c) -> bool:
    """Can a SIPI start this CPU (now, or after the INIT it has pending)?"""
    return c.init or c.mode == WAIT_SIPI or c.apic_wfs


def _ipi(dest: int, mode: int, vector: int, sender: int | None) -> Action:
    def act(system, w, log):
        m = _rogue_page(system, w.m, log) if mode == DM_SIPI and vector == ROGUE_PAGE >> 12 else w.m
        bus = os_bus(system, m, log, sender)
        bus.ipi(dest, mode, vector)
        return bus.m

    return act


# -- the narrower IPI adversaries ---------------------------------------------------------------
@dataclass(frozen=True)
class EarlySmi(Adversary):
    def actions(self, system, w):
        out: list[tuple[str, Action]] = []
        for slot, c in enumerate(w.m.cpus):
            if not c.present or c.smi:
                continue

            def act(system, w, log, slot=slot):
                bus = os_bus(system, w.m, log)
                bus.ipi(system.cfg.apic_id(slot), DM_SMI)
                return bus.m

            out.append((f"the OS sends an SMI IPI to cpu{slot}", act))
        return out


@dataclass(frozen=True)
class EarlyInitSipi(Adversary):
    def actions(self, system, w):
        out: list[tuple[str, Action]] = []
        for slot, c in enumerate(w.m.cpus):
            if not c.present or c.mode != WAIT_SIPI:
                continue

            def act(system, w, log, slot=slot):
                m = _rogue_page(system, w.m, log)
                bus = os_bus(system, m, log)
                apic = system.cfg.apic_id(slot)
                bus.ipi(apic, DM_INIT)
                bus.ipi(apic, DM_SIPI, ROGUE_PAGE >> 12)
                return bus.m

            out.append((f"the OS starts cpu{slot} with INIT-SIPI before the firmware relocated it", act))
        return out


@dataclass(frozen=True)
class InitInSmm(Adversary):
    """INIT to CPUs in SMM that the OS does not run itself (new CPUs, CPUs it offlined)."""

    def actions(self, system, w):
        out: list[tuple[str, Action]] = []
        plat = system.plat
        for slot, c in enumerate(w.m.cpus):
            if not c.present or not c.smm or c.init:
                continue
            apic = system.cfg.apic_id(slot)
            online = plat.mem_read(w.m, kernel.online_flag(apic), 1, CPU)
            offlined = plat.mem_read(w.m, kernel.offline_ack(apic), 1, CPU)
            if online and not offlined:
                continue

            def act(system, w, log, apic=apic):
                bus = os_bus(system, w.m, log)
                bus.ipi(apic, DM_INIT)
                return bus.m

            out.append((f"the OS sends INIT to cpu{slot}, which is in SMM", act))
        return out
