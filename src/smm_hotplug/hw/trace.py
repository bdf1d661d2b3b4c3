"""What a transition reports: timeline events and invariant violations.

A transition is a pure function of the state; this log is its side channel to the drivers
(the simulator prints it, the checker keeps only the violations, the QEMU endpoint turns
``qmp`` events into QMP events).
"""

from __future__ import annotations

from typing import NamedTuple


class Event(NamedTuple):
    kind: str  # io | mem | smi | rsm | ipi | cpu | mgmt | os | fw | dma | qmp | note
    actor: str  # cpu0.., mgmt, dma, qtest, adversary
    text: str
    detail: bool = False  # register-level detail, shown with --verbose
    data: tuple = ()  # structured payload (e.g. QMP event name and fields)


class Violation(NamedTuple):
    prop: str
    text: str


class Log:
    """Collects events (if ``record``) and always collects violations.

    ``cross`` is set by the hardware rooms when a CPU's step read or changed the state of another
    CPU beyond which slots hold one (an IPI, a broadcast SMI, an eject, a firmware timeout that
    looks at the CPU it waits for): such a step depends on more than its CPU's local view, which
    is what a driver memoising steps needs to know.
    """

    __slots__ = ("cross", "detail", "events", "record", "violations")

    def __init__(self, record: bool = True, detail: bool = True) -> None:
        self.record = record
        self.detail = detail
        self.events: list[Event] = []
        self.violations: list[Violation] = []
        self.cross = False

    def add(self, kind: str, actor: str, text: str, detail: bool = False, data: tuple = ()) -> None:
        if self.record and (self.detail or not detail):
            self.events.append(Event(kind, actor, text, detail, data))

    def violate(self, prop: str, text: str) -> None:
        self.violations.append(Violation(prop, text))
        if self.record:
            self.events.append(Event("violation", prop, text))


class NullLog(Log):
    """Records nothing but violations: the checker's log."""

    def __init__(self) -> None:
        super().__init__(record=False, detail=False)
