"""When a search stops before it has seen everything: a state, time, memory or depth limit, or
Ctrl-C.

Breadth first, a stopped search is still a bounded proof (see ``CheckResult.bound``), so a limit
ends it with verdict "incomplete" and the reason, instead of the operating system's out-of-memory
killer ending it with nothing.  Without an explicit memory limit a search stops once its process
would take more than ``AUTO_MEMORY_SHARE`` of the memory that was available when it started.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

from smm_hotplug.errors import UsageError

AUTO_MEMORY_SHARE = 0.85
# Time and memory are looked at once per this many transitions (reading /proc costs ~10 µs).
WATCH_EVERY = 4096


@dataclass(frozen=True)
class Limits:
    states: int | None = None
    seconds: float | None = None
    memory_mib: int | None = None  # resident set of this process; None: automatic
    depth: int | None = None  # schedules longer than this are not explored (bounded proof)

    def validate(self) -> Limits:
        for flag, value in (
            ("--max-states", self.states),
            ("--max-seconds", self.seconds),
            ("--max-memory", self.memory_mib),
            ("--max-depth", self.depth),
        ):
            if value is not None and not value > 0:  # NaN too
                raise UsageError(f"{flag} must be positive")
        return self

    def per_worker(self, workers: int) -> Limits:
        """The limits of one of ``workers`` searches running side by side (the matrix)."""
        if self.memory_mib is not None or workers <= 1:
            return self
        return Limits(self.states, self.seconds, max(1, auto_memory_mib() // workers), self.depth)


def rss_mib() -> float:
    """This process's resident memory now (its peak where /proc is not there)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def available_mib() -> float | None:
    """MemAvailable from /proc/meminfo, or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def auto_memory_mib() -> int:
    avail = available_mib()
    if avail is None:
        return 2**40  # nothing to go by: no automatic limit
    return int(AUTO_MEMORY_SHARE * (avail + rss_mib()))


class Watch:
    """The running limits of one search: ``exceeded`` names the limit hit, if any."""

    def __init__(self, limits: Limits | None) -> None:
        limits = limits or Limits()
        self.limits = limits
        self.t0 = time.monotonic()
        self.memory_mib = limits.memory_mib if limits.memory_mib is not None else auto_memory_mib()
        self._next_look = WATCH_EVERY

    def deep_enough(self, depth: int) -> str | None:
        """Checked once every schedule of ``depth`` steps has been explored."""
        if self.limits.depth is not None and depth >= self.limits.depth:
            return f"at depth {self.limits.depth:,}"
        return None

    def exceeded(self, states: int, transitions: int) -> str | None:
        lim = self.limits
        if lim.states is not None and states > lim.states:
            return f"after {lim.states:,} states"
        if transitions < self._next_look:
            return None
        self._next_look = transitions + WATCH_EVERY
        if lim.seconds is not None and time.monotonic() - self.t0 > lim.seconds:
            return f"after {lim.seconds:g} s"
        if rss_mib() > self.memory_mib:
            how = "" if lim.memory_mib is not None else " (automatic limit, see --max-memory)"
            return f"at {self.memory_mib:,} MiB of memory{how}"
        return None
