"""What a long search shows while it runs: layer, states, speed, memory and what is left.

The estimate comes from how the BFS layers grow.  While the last layers still grow, the end is
not in sight and the line says by how much they grow per step; once they shrink, the states
left are about the rest of a geometric series with the recent shrink factor, and the time left
is that over the recent speed.
"""

from __future__ import annotations

import math

from smm_hotplug.checker.search import Snapshot

RECENT = 8  # layers the growth factor is measured over


def growth(layers: tuple[int, ...] | list[int]) -> float | None:
    """Geometric mean of the last layers' size ratios (None until there are enough)."""
    recent = [n for n in layers[-RECENT - 1 :] if n > 0]
    if len(recent) < 3:
        return None
    return (recent[-1] / recent[0]) ** (1 / (len(recent) - 1))


def states_left(snap: Snapshot) -> float | None:
    """Expected states still to be found, once the layers shrink."""
    r = growth(snap.layers)
    if r is None or r >= 0.999:
        return None
    last = snap.layers[-1] if snap.layers else snap.layer
    return last * r / (1 - r) + (snap.layer - snap.done) * r


def line(snap: Snapshot) -> str:
    rate = snap.states / snap.seconds if snap.seconds > 0 else 0.0
    text = (
        f"layer {snap.depth} ({snap.done:,}/{snap.layer:,}): {snap.states:,} states, "
        f"{snap.transitions:,} transitions, {rate:,.0f} states/s, {snap.memory_mib:,.0f} MiB"
    )
    r = growth(snap.layers)
    left = states_left(snap)
    if left is not None and rate > 0:
        text += f"; ~{left:,.0f} states left (~{_duration(left / rate)})"
    elif r is not None:
        text += f"; layers growing ×{r:.3f} per step"
    return text


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
