"""What two reductions not built could save, measured on the explored states.

    python bench/reductions.py commute                 # shipped × all, default config, 3,000 states
    python bench/reductions.py commute --states 20000 --attack os-early-smi
    python bench/reductions.py subsume --depth 59      # budget subsumption, every schedule ≤ 59 steps

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


def _system(attacks: tuple[str, ...], design: str, accel: str) -> System:
    try:
        system = CheckSetup(design, Scenario(), attacks, accel=accel).system()
    except UsageError as err:  # an unknown id or impossible count: one line, non-zero exit
        raise click.ClickException(str(err)) from None
    click.echo(f"{design} × {'+'.join(attacks)}, default configuration, {accel}:")
    return system


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


if __name__ == "__main__":
    main()
