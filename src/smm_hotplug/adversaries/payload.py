"""Code an adversary plants.  Running any of it in SMM is the breach the checker looks for."""

from __future__ import annotations

from smm_hotplug.code import program

OS_PAYLOAD_SMBASE = 0x400000  # an SMBASE the attacker chooses in its own memory
ROGUE_PAGE = 0xA000  # where a malicious OS starts CPUs early (SIPI vector 0x0A)

payload = program("os.payload", "os", size=0x100, doc="attacker code meant to run in SMM")


@payload.step("entry")
def _steal(b, r):
    # In SMM this code sees all of SMRAM; it copies the firmware's CPU table out and returns.
    b.note("attacker code runs in SMM")
    b.wr(0x500000, 8, b.rd(0x30000, 8))
    return "leave"


@payload.step("leave")
def _leave(b, r):
    b.rsm()
    return "leave"


rogue = program("os.rogue", "os", size=0x100, doc="OS code on a CPU the OS started early")


@rogue.step("entry")
def _rogue(b, r):
    b.sti()
    b.hlt()
    return "entry"
