"""What a device carries across live migration, declared next to the device as QEMU's
VMStateDescription is.

A device module declares ``VMSTATE``: which fields of its state the source sends — a
subsection's fields only when its ``needed`` hook says so — and what the destination recomputes
once they are loaded (its ``post_load``).  A field that is not sent keeps the value the
destination built from its own command line and reset.  ``hw.migration`` restores a whole
machine from these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

WHOLE = ("*",)  # the device's state is one value, sent as a whole


def _no_post_load(state: Any, cfg: Any) -> Any:
    return state


class Vmstate(NamedTuple):
    name: str  # the VMStateDescription (or subsection) in QEMU 7.2
    sent: Callable[[Any], tuple[str, ...]]  # fields the source sends, given its state
    post_load: Callable[[Any, Any], Any] = _no_post_load  # (loaded state, PlatformConfig) -> state


def load(vm: Vmstate, dest: Any, source: Any, cfg: Any) -> Any:
    """The destination's state after loading what ``source`` sends and running the post-load."""
    fields = vm.sent(source)
    if fields == WHOLE:
        loaded = source
    elif fields:
        loaded = dest._replace(**{f: getattr(source, f) for f in fields})
    else:
        loaded = dest
    return vm.post_load(loaded, cfg)
