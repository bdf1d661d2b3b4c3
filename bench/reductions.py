"""What reductions not built could save, measured on the explored states.

    python bench/reductions.py commute                 # shipped × all, default config, 3,000 states
    python bench/reductions.py commute --states 20000 --attack os-early-smi
    python bench/reductions.py subsume --depth 59      # budget subsumption, every schedule ≤ 59 steps
    python bench/reductions.py ceiling --attack os-early-smi          # POR if only "now" mattered
    python bench/reductions.py ceiling --attack os-ipi --by cpus --cpus 1,2,1,1

``commute``: a partial-order reduction may skip an interleaving only where two moves of different
actors are independent: each leaves the other possible and doing them in either order gives the
same state (the "diamond").  This explores the first states breadth-first, and at each state tries
every pair of moves of two different actors in both orders.  It prints the share of pairs that
commute (by what the two actors are), how many actors can move at a state, and at how many states
some actor's moves commute with every other actor's move — where even an ideal persistent set
could be smaller than "everything" at one step.  These are upper bounds of what a sound reduction
could use: a persistent set also needs the moves an actor makes *later* to stay independent, which
a diamond at one state does not show.

``subsume``: an adversary's budget only gates its moves, so a state whose machine was already met
with at least as much budget left (each adversary's) can do nothing new; skipping it keeps every
reachable machine, at the same or a smaller depth, so safety verdicts and shortest-violation
lengths stay (not the traces themselves, and not a proof of ``hotplug-completes``: a state with
less budget may be stuck where the one kept is not).  This counts the states of a plain
breadth-first search and of one that skips subsumed states, to the same depth.

``ceiling``: the whole state space as a partial-order reduction would keep it if only the
moves possible *now* mattered, next to the plain one.  At each state every pair of moves gets
the diamond test (as ``commute``); two moves that fail it are dependent.  A candidate set of
moves to explore alone is the closure of a seed under dependency: nothing outside it interferes
with anything inside, at this state.  The smallest candidate is explored, unless one of its moves
reports a violation (visibility: a move that changes what a property sees must not be
postponed) or leads to a state met at this depth or before (the cycle proviso of a
breadth-first search: every cycle then has a fully expanded state); then the next smallest,
else every move.  A sound persistent set must also hold against the moves made *later* by the
actors outside it, and ``--by`` says how much of that the seeds respect:

* ``cpus``: every CPU's move together; only the adversaries and the operator can be postponed.
  Their later moves are the same few actions as now (within their budgets), so this is close to
  what footprints alone would allow — nothing the CPUs will do later has to be known.
* ``cpu`` (default): one CPU's move.  The other CPUs' later steps are not looked at, so this is
  what per-program summaries of every step's accesses could at best add: an upper bound of the
  gain of a sound reduction built on them.
* ``move`` / ``actor``: any one move (or all of one actor's moves).  Postponing an adversary
  because its action commutes with everything *now* drops every run where it acts after a
  dependent step, so these counts are far below anything sound; they are printed only to show
  how much of the gap the future condition is.

The choice among candidates is greedy (smallest first).
"""

from __future__ import annotations

import time
from collections import Counter, deque

import click

from smm_hotplug.checker.traces import CheckSetup
from smm_hotplug.designs.catalog import DEFAULT_DESIGN
from smm_hotplug.errors import UsageError
from smm_hotplug.world import Move, Scenario, System, World


def _label(mv: Move) -> tuple[str, str]:
    """A move named so that it can be found again after another actor's move: the actor and, for
    an adversary, the action it describes (its choice number may shift)."""
    if mv.actor.startswith("adv:"):
        return mv.actor, mv.log.events[0].text if mv.log.events else str(mv.choice)
    return mv.actor, str(mv.choice)


def _moves(system: System, w: World) -> dict[tuple[str, str], World]:
    return {_label(mv): mv.world for mv in system.moves(w, record=True)}


def _kind(system: System, w: World, actor: str) -> str:
    """What an actor is at ``w``: a CPU in SMM, one running the OS, another CPU (booting, in the
    pen, just started), the operator, or an adversary by the party it is."""
    if actor.startswith("cpu"):
        c = w.m.cpus[int(actor[3:])]
        if c.smm:
            return "cpu in SMM"
        if c.pc is not None and system.plat.fetch(w.m, c.pc[0], "cpu")[1] == "os":
            return "cpu in the OS"
        return "cpu (other)"
    if actor == "mgmt":
        return "operator"
    return "adversary"


def measure(system: System, states: int) -> str:
    t0 = time.perf_counter()
    start = system.initial()
    seen = {start}
    queue = deque([start])
    expanded = pairs = commuting = free_states = 0
    actors_at = Counter[int]()
    by_kind: Counter[tuple[str, str]] = Counter()
    commuting_by_kind: Counter[tuple[str, str]] = Counter()
    while queue and expanded < states:
        w = queue.popleft()
        expanded += 1
        moves = _moves(system, w)
        for w2 in moves.values():
            if w2 not in seen:
                seen.add(w2)
                queue.append(w2)
        after = {lab: _moves(system, w2) for lab, w2 in moves.items()}
        actors = {a for a, _ in moves}
        actors_at[len(actors)] += 1
        dependent: set[str] = set()
        labels = list(moves)
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                if a[0] == b[0]:
                    continue
                pairs += 1
                kinds = tuple(sorted((_kind(system, w, a[0]), _kind(system, w, b[0]))))
                by_kind[kinds] += 1  # type: ignore[index]
                ab, ba = after[a].get(b), after[b].get(a)
                if ab is not None and ab == ba:
                    commuting += 1
                    commuting_by_kind[kinds] += 1  # type: ignore[index]
                else:
                    dependent |= {a[0], b[0]}
        if len(actors) > 1 and actors - dependent:
            free_states += 1
    dt = time.perf_counter() - t0
    many = sum(n for k, n in actors_at.items() if k > 1)
    spread = ", ".join(f"{k}: {n:,}" for k, n in sorted(actors_at.items()))
    kinds = "\n".join(
        f"  {a} / {b}: {n:,} pairs, {100 * commuting_by_kind[(a, b)] / n:.1f} % commute"
        for (a, b), n in by_kind.most_common()
    )
    return (
        f"{expanded:,} states expanded, {len(seen):,} seen, {dt:.0f} s\n"
        f"actors able to move at a state (actors: states): {spread}\n"
        f"pairs of moves of two actors: {pairs:,}, commuting {commuting:,} "
        f"({100 * commuting / max(pairs, 1):.1f} %), by what the two actors are:\n{kinds}\n"
        f"states where some actor's moves commute with every other actor's: {free_states:,} of "
        f"{many:,} with more than one actor ({100 * free_states / max(many, 1):.1f} %)"
    )


def ceiling(system: System, limit: int, by: str) -> str:
    lines = []
    for reduce in (False, True):
        t0 = time.perf_counter()
        start = system.initial()
        depth_of = {start: 0}
        queue = deque([start])
        transitions = reduced = 0
        while queue and len(depth_of) <= limit:
            w = queue.popleft()
            moves = list(system.moves(w, record=reduce))
            kept = _ample(system, w, moves, depth_of, by) if reduce else moves
            reduced += len(kept) < len(moves)
            transitions += len(kept)
            for mv in kept:
                if mv.world not in depth_of:
                    depth_of[mv.world] = depth_of[w] + 1
                    queue.append(mv.world)
        dt = time.perf_counter() - t0
        states = f"{len(depth_of):,}" if not queue else f"incomplete at {len(depth_of):,}"
        label = f"reduction (closures of {by})" if reduce else "plain"
        extra = f", {reduced:,} states expanded partly" if reduce else ""
        deepest = max(depth_of.values())
        counts = f"{states} states, {transitions:,} transitions, depth {deepest}"
        lines.append(f"{label}: {counts}{extra} ({dt:.0f} s)")
    return "\n".join(lines)


def _ample(system: System, w: World, moves: list[Move], depth_of: dict[World, int], by: str) -> list[Move]:
    """The smallest closure of a seed under dependency at ``w`` that may be explored alone (see
    the module's docstring), or every move."""
    if len({mv.actor for mv in moves}) < 2:
        return moves
    labels = [_label(mv) for mv in moves]
    after = [_moves(system, mv.world) for mv in moves]
    n = len(moves)
    dependent: list[set[int]] = [set() for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            ij, ji = after[i].get(labels[j]), after[j].get(labels[i])
            if ij is None or ij != ji or (by == "actor" and moves[i].actor == moves[j].actor):
                dependent[i].add(j)
                dependent[j].add(i)
    closures: set[frozenset[int]] = set()
    cpus = [i for i, mv in enumerate(moves) if mv.actor.startswith("cpu")]
    if by == "cpus":
        seeds = [cpus] if cpus else []
    elif by == "cpu":
        seeds = [[i] for i in cpus]
    else:
        seeds = [[i] for i in range(n)]
    for seed in seeds:
        closure, todo = set(seed), list(seed)
        while todo:
            for k in dependent[todo.pop()] - closure:
                closure.add(k)
                todo.append(k)
        if len(closure) < n:
            closures.add(frozenset(closure))
    here = depth_of[w]
    for closure in sorted(closures, key=lambda c: (len(c), sorted(c))):
        chosen = [moves[k] for k in sorted(closure)]
        if any(mv.log.violations for mv in chosen):
            continue
        if any(depth_of.get(mv.world, here + 1) <= here for mv in chosen):
            continue
        return chosen
    return moves


def subsume(system: System, depth: int) -> str:
    lines = []
    for skip in (False, True):
        t0 = time.perf_counter()
        start = system.initial()
        seen = {start}
        # the machine (with the operator's progress) -> the budgets it was met with
        budgets_of: dict[tuple, list[tuple[int, ...]]] = {}
        budgets_of[start.m, start.done, start.unplugged] = [start.budgets]
        layer, layers = [start], []
        while layer and len(layers) < depth:
            nxt = []
            for w in layer:
                for mv in system.moves(w):
                    w2 = mv.world
                    if w2 in seen:
                        continue
                    if skip:
                        kept = budgets_of.setdefault((w2.m, w2.done, w2.unplugged), [])
                        if any(all(a >= b for a, b in zip(old, w2.budgets, strict=True)) for old in kept):
                            continue
                        kept.append(w2.budgets)
                    seen.add(w2)
                    nxt.append(w2)
            layer = nxt
            layers.append(len(nxt))
        dt = time.perf_counter() - t0
        last = ", ".join(f"{n:,}" for n in layers[-4:])
        label = "skipping subsumed states" if skip else "plain"
        lines.append(f"{label}: {len(seen):,} states in {len(layers)} steps, last layers {last} ({dt:.0f} s)")
    return "\n".join(lines)


_SETUP = [
    click.option(
        "--attack",
        "attacks",
        multiple=True,
        default=("all",),
        show_default=True,
        help="Adversary id (repeatable).",
    ),
    click.option("--design", default=DEFAULT_DESIGN, show_default=True, help="Design id."),
    click.option("--accel", type=click.Choice(["kvm", "tcg"]), default="kvm", show_default=True),
]


def _system(attacks: tuple[str, ...], design: str, accel: str, cpus: str | None = None) -> System:
    try:
        scenario = Scenario(*_counts(cpus)) if cpus else Scenario()
        system = CheckSetup(design, scenario, attacks, accel=accel).system()
    except UsageError as err:  # an unknown id or impossible count: one line, non-zero exit
        raise click.ClickException(str(err)) from None
    where = f"{cpus} (boot, max, plug, unplug)" if cpus else "default configuration"
    click.echo(f"{design} × {'+'.join(attacks)}, {where}, {accel}:")
    return system


def _counts(spec: str) -> tuple[int, int, int, int]:
    parts = spec.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise UsageError(f"--cpus takes four counts BOOT,MAX,PLUG,UNPLUG, not {spec!r}")
    boot, most, plug, unplug = (int(p) for p in parts)
    return boot, most, plug, unplug


def _with_setup(fn):  # type: ignore[no-untyped-def]
    for option in reversed(_SETUP):
        fn = option(fn)
    return fn


@click.group()
def main() -> None:
    """Measure what partial-order reduction or budget subsumption could save."""


@main.command("commute")
@click.option("--states", default=3_000, show_default=True, help="States to expand.")
@_with_setup
def commute_cmd(states: int, attacks: tuple[str, ...], design: str, accel: str) -> None:
    click.echo(measure(_system(attacks, design, accel), states))


@main.command("subsume")
@click.option("--depth", default=57, show_default=True, help="Every schedule of up to this many steps.")
@_with_setup
def subsume_cmd(depth: int, attacks: tuple[str, ...], design: str, accel: str) -> None:
    click.echo(subsume(_system(attacks, design, accel), depth))


@main.command("ceiling")
@click.option("--limit", default=3_000_000, show_default=True, help="Stop a search after this many states.")
@click.option("--by", type=click.Choice(["cpus", "cpu", "move", "actor"]), default="cpu", show_default=True)
@click.option("--cpus", default=None, help="BOOT,MAX,PLUG,UNPLUG instead of the default 2,4,2,1.")
@_with_setup
def ceiling_cmd(
    limit: int, by: str, cpus: str | None, attacks: tuple[str, ...], design: str, accel: str
) -> None:
    click.echo(ceiling(_system(attacks, design, accel, cpus), limit, by))


if __name__ == "__main__":
    main()
