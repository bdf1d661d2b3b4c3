"""The q35 host bridge's PCI configuration mechanism #1 (ports 0xcf8/0xcfc).

CONFIG_ADDRESS (0xcf8, 32-bit only) latches bus/device/function/register with the enable bit;
CONFIG_DATA (0xcfc..0xcff) then reaches that function's configuration space, at the register
plus the data port's byte offset.  The host only decodes; which function answers is the
machine's PCI table (hw.machine).  From QEMU hw/pci/pci_host.c.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from smm_hotplug.hw.effects import NONE, ConfigWrite, Effects, Note
from smm_hotplug.hw.iospace import Ops
from smm_hotplug.hw.vmstate import WHOLE, Vmstate

CONFIG_ADDRESS = 0xCF8
CONFIG_DATA = 0xCFC
ENABLE = 0x80000000

DevFn = tuple[int, int, int]  # (bus, device, function)


def address_read(addr: int, _links: None, offset: int, size: int) -> tuple[int, int, Effects]:
    return addr, addr, NONE


def address_write(addr: int, _links: None, offset: int, size: int, value: int) -> tuple[int, Effects]:
    """pci_host_config_write: only a 32-bit write at 0xcf8 sets the address."""
    if offset == 0 and size == 4:
        return value, NONE
    return addr, NONE


ADDRESS_OPS = Ops("pci-conf-idx", 4, address_read, address_write)

# Live migration (hw/pci/pci_host.c vmstate_pcihost, sent while x-config-reg-migration-enabled,
# the default since pc-2.x): CONFIG_ADDRESS.
VMSTATE = Vmstate("PCIHost", lambda addr: WHOLE)


def target(addr: int, offset: int) -> tuple[DevFn, int] | None:
    """(bus, device, function) and configuration register a data access at ``offset`` reaches.

    The data port's byte offset is ORed into the address register as written, low two bits
    included (pci_host_config_write/read: ``config_reg | (addr & 3)``), so an address of 0x9d
    with a byte access at 0xcfd reaches 0x9d, and one of 0x9e at 0xcfc reaches 0x9e."""
    if not addr & ENABLE:
        return None
    devfn = ((addr >> 16) & 0xFF, (addr >> 11) & 0x1F, (addr >> 8) & 0x7)
    return devfn, (addr | offset) & 0xFF


class Links(NamedTuple):
    """The PCI bus behind the host: a byte of a function's configuration space (None: no
    function answers at that address)."""

    config_byte: Callable[[DevFn, int], int | None]


def data_read(addr: int, links: Links, offset: int, size: int) -> tuple[int, int, Effects]:
    """A configuration read; all-ones when disabled or when no function answers."""
    hit = target(addr, offset)
    if hit is None:
        return addr, 0xFFFFFFFF, NONE
    devfn, reg = hit
    if links.config_byte(devfn, 0) is None:
        return addr, 0xFFFFFFFF, NONE
    value = 0
    for i in range(size):
        if reg + i < 256:
            value |= (links.config_byte(devfn, reg + i) or 0) << (8 * i)
    text = f"pci {devfn[1]:02x}.{devfn[2]} cfg[0x{reg:02x}] -> 0x{value:0{2 * size}x}"
    return addr, value, (Note("io", text, detail=True),)


def data_write(addr: int, links: Links, offset: int, size: int, value: int) -> tuple[int, Effects]:
    """A configuration write, forwarded to the function (if any: the machine routes it)."""
    hit = target(addr, offset)
    if hit is None:
        return addr, NONE
    devfn, reg = hit
    text = f"pci {devfn[1]:02x}.{devfn[2]} cfg[0x{reg:02x}] <- 0x{value:0{2 * size}x}"
    return addr, (Note("io", text, detail=True), ConfigWrite(devfn, reg, size, value))


DATA_OPS = Ops("pci-conf-data", 4, data_read, data_write)
