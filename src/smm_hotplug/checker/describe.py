"""A state described in words: where each CPU is (for a deadlock or livelock's last state)."""

from __future__ import annotations

from smm_hotplug.world import System, World


def describe_stuck(system: System, w: World) -> str:
    from smm_hotplug.simulator import PLACES

    parts = []
    for slot, c in enumerate(w.m.cpus):
        if not c.present:
            continue
        where = ""
        if c.pc is not None:
            obj = system.plat.mem_object(w.m, c.pc[0], "smm" if c.smm else "cpu")
            name = obj.value if obj is not None else "?"
            where = PLACES.get((name, c.pc[1]), f"{name}:{c.pc[1]}")
        state = ("in SMM " if c.smm else "") + where if where else ("waiting for SIPI" if c.mode == 1 else "")
        parts.append(f"cpu{slot} {state}".strip())
    return "; ".join(parts)
