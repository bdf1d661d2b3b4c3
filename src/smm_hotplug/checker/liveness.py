"""``hotplug-completes`` over an explored graph: the run into the hang, and who waits for what.

Once every state is expanded, a state that can no longer reach the end of the scenario is a
violation.  The first such state (breadth-first order) is where a shortest run passes the point
of no return, but for a deterministic bug that is power-on, which shows nothing.  So the trace
goes on to where such a run ends up for ever: a bottom strongly connected component of the
states that cannot finish — a state where nothing can move (a deadlock), or a cycle that repeats
for ever (a livelock), shown once the way SPIN prints a lasso.  At that end each actor is named
with what it waits for, taken from the ``waits=`` description of the step its CPU is stopped at
(``code.Program.step``).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from smm_hotplug.checker.graph import StateGraph
from smm_hotplug.code import PROGRAMS
from smm_hotplug.hw.cpu import HALTED, WAIT_SIPI
from smm_hotplug.hw.views import CPU, SMM
from smm_hotplug.world import System, World


class Stuck(NamedTuple):
    """A ``hotplug-completes`` violation: the schedule from power-on into the stuck end."""

    schedule: list[tuple[str, int]]  # power-on -> deadlock state, or -> once around the cycle
    cycle_start: int | None  # steps cycle_start.. repeat for ever (None: a deadlock)
    no_return: int  # after this many steps the scenario can no longer complete
    stuck: list[dict[str, str]]  # {"actor", "waiting_for", "at"} at the end
    detail: str


def find_stuck(system: System, graph: StateGraph, finished: list[int] | np.ndarray) -> Stuck | None:
    """The run into the stuck end, or None when every reachable state can still finish.

    Only the graph is needed: the stuck end's state is rebuilt by replaying the schedule to it,
    and each step round the cycle is the move whose place among its state's moves is the place
    of the next state among the recorded successors — so a search that keeps no states
    (fingerprints, states on other processes) shows the same run."""
    good = graph.can_finish(finished)
    found = graph.stuck_end(good)
    if found is None:
        return None
    end, cycle = found
    path = graph.states_to(end)
    no_return = next(i for i, s in enumerate(path) if not good[s])
    schedule = graph.path_to(end)
    w_end = replay(system, schedule)
    moving: set[str] = set()
    cycle_start = None
    if cycle:
        cycle_start = len(schedule)
        w = w_end
        for u, v in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            k = graph.successors(u).index(v)
            mv = next(itertools.islice(system.moves(w), k, None))
            schedule.append((mv.actor, mv.choice))
            moving.add(mv.actor)
            w = mv.world
        if w != w_end:
            raise AssertionError("the recorded cycle does not return to its first state")
    stuck, detail = stuck_end(system, w_end, len(schedule), cycle_start, no_return, moving)
    return Stuck(schedule, cycle_start, no_return, stuck, detail)


def replay(system: System, schedule: list[tuple[str, int]]) -> World:
    """The state a schedule from power-on leads to."""
    w = system.initial()
    for actor, choice in schedule:
        w = system.replay_move(w, actor, choice).world
    return w


def stuck_end(
    system: System, end: World, steps: int, cycle_start: int | None, no_return: int, moving: set[str]
) -> tuple[list[dict[str, str]], str]:
    """Who waits for what at ``end``, and the violation's detail line for a run of ``steps``
    steps into it (a lasso when ``cycle_start`` is set) that could not complete after
    ``no_return`` steps."""
    stuck = describe(system, end, moving)
    waits = "; ".join(f"{s['actor']} {s['waiting_for']}" for s in stuck)
    if cycle_start is None:
        detail = f"deadlock: after {steps} steps no actor can move and the scenario is not complete"
    else:
        detail = f"livelock: steps {cycle_start}-{steps - 1} repeat for ever and the scenario never completes"
    detail += f" (it cannot complete any more from step {no_return}): {waits}"
    undone = unfinished(system, end)
    if undone:
        detail += f"; left undone: {', '.join(undone)}"
    return stuck, detail


def unfinished(system: System, w: World) -> list[str]:
    """What keeps the scenario from being complete besides the actors: events still pending in
    the CPU hotplug block (World.settled wants none)."""
    hp = w.m.cpuhp
    out = []
    for name, bits in (
        ("insert event", hp.insert),
        ("remove request", hp.remove),
        ("fw-remove", hp.fw_remove),
    ):
        slots = [s for s in range(len(w.m.cpus)) if bits >> s & 1]
        if slots:
            out.append(f"{name} pending for {', '.join(f'cpu{s}' for s in slots)}")
    return out


def describe(
    system: System, w: World, moving: set[str] | frozenset[str] = frozenset()
) -> list[dict[str, str]]:
    """Each actor that has not finished, and what it waits for (or that it keeps moving, for an
    actor that moves in the repeating cycle)."""
    out = []
    for slot, c in enumerate(w.m.cpus):
        if not c.present:
            continue
        actor = f"cpu{slot}"
        at, text = _cpu_wait(system, w, slot)
        if actor in moving:
            text = f"keeps moving in the cycle (at the end: {text})"
        out.append({"actor": actor, "waiting_for": text, "at": at})
    left = system.script[w.done :]
    if left:
        kind = left[0]
        if "mgmt" in moving:
            text = f"keeps moving in the cycle ({len(left)} action(s) left)"
        elif kind in system.wait_before:
            text = f"waits for the guest to settle before its next action ({kind})"
        else:
            text = f"has its next action ({kind}) left but cannot take it"
        out.append({"actor": "mgmt", "waiting_for": text, "at": f"script step {w.done}"})
    return out


def _cpu_wait(system: System, w: World, slot: int) -> tuple[str, str]:
    """(where the CPU is, what it is doing there in words)."""
    c = w.m.cpus[slot]
    smm = " in SMM" if c.smm else ""
    if c.mode == WAIT_SIPI:
        return "wait-for-SIPI", "waits for a SIPI" + (" (an SMI is latched)" if c.smi else "")
    if c.pc is None:
        return "-", "is stopped (it executed non-code)"
    obj = system.plat.mem_object(w.m, c.pc[0], SMM if c.smm else CPU)
    prog = PROGRAMS.get(str(obj.value)) if obj is not None and obj.kind == "code" else None
    if prog is None:
        return f"0x{c.pc[0]:x}{smm}", f"executes data at 0x{c.pc[0]:x}{smm}"
    at = f"{prog.name}:{c.pc[1]}{smm}"
    text = prog.waits.get(c.pc[1])
    if text is None:
        text = ("is halted" if c.mode == HALTED else "runs") + f" at {prog.name}:{c.pc[1]}{smm}"
    return at, text
