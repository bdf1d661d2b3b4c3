"""What a device asks of the machine, as explicit values.

A device's register handler is a pure function of the device's own state and of what the
machine links into it (see ``hw.machine``).  Whatever it does beyond its own state it returns
as effects, which the machine applies in order after the access: a line in the timeline or a
QMP event, an SMI, a CPU ejected, a fw_cfg DMA transfer started, a fw_cfg file selected or
written (whose owner — the LPC for the SMI feature files — reacts to it), a PCI configuration
write the host bridge forwards to a function.
"""

from __future__ import annotations

from typing import NamedTuple


class Note(NamedTuple):
    """A timeline line; kind "qmp" lines are QMP events (name and fields in ``data``)."""

    kind: str
    text: str
    detail: bool = False
    data: tuple = ()


class RaiseSmi(NamedTuple):
    """An SMI to every CPU (``broadcast``) or to the CPU whose access raised it."""

    broadcast: bool


class Eject(NamedTuple):
    """The VMM unplugs and destroys the CPU in ``slot``."""

    slot: int


class FirmwareRemove(NamedTuple):
    """The firmware-remove bit of ``slot`` was set (by _EJ0, when the OS writes it)."""

    slot: int


class StartDma(NamedTuple):
    """fw_cfg: run the DMA transfer described at guest-physical ``desc_addr``."""

    desc_addr: int


class FileSelected(NamedTuple):
    """fw_cfg: the named file was selected (its owner's select callback runs)."""

    name: str


class FileWritten(NamedTuple):
    """fw_cfg: ``data`` was written at ``offset`` of the named file (its write callback runs)."""

    name: str
    offset: int
    data: bytes


class ConfigWrite(NamedTuple):
    """PCI host bridge: a configuration write for the function at ``devfn``."""

    devfn: tuple[int, int, int]
    reg: int
    size: int
    value: int


Effect = Note | RaiseSmi | Eject | FirmwareRemove | StartDma | FileSelected | FileWritten | ConfigWrite
Effects = tuple[Effect, ...]
NONE: Effects = ()
