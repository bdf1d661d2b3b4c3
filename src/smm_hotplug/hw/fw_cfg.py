"""QEMU fw_cfg (x86 I/O interface): selector 0x510, data 0x511, DMA address 0x514/0x518.

The device's state, its two port blocks (``PORT_OPS``, ``DMA_OPS``), selection, and its DMA
engine (``dma_transfer``), which moves data through whatever DMA view the machine gives it.
The SMI feature files belong to the LPC: selecting features-ok and writing requested-features
are returned as effects for their owner.  From QEMU hw/nvram/fw_cfg.c and docs/specs/fw_cfg.rst
(7.2), with the file catalogue a `-machine q35,smm=on` guest sees (observed on Debian's QEMU
7.2).  Only what the firmware model and the SMI negotiation need has real contents; the
ACPI/SMBIOS blobs and option ROMs QEMU generates are listed with QEMU's names and sizes and
read as zeros (not modelled).
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Protocol

from smm_hotplug.hw.config import PlatformConfig
from smm_hotplug.hw.effects import NONE, Effects, FileSelected, FileWritten, Note, StartDma
from smm_hotplug.hw.iospace import Ops
from smm_hotplug.hw.lpc import FILE_FEATURES_OK, FILE_REQUESTED, FILE_SUPPORTED
from smm_hotplug.hw.vmstate import Vmstate

PORT_SELECTOR = 0x510
PORT_DATA = 0x511
PORT_DMA = 0x514  # 8 bytes, big endian: high half at 0x514, low half at 0x518 starts DMA

# Well-known keys (include/standard-headers/linux/qemu_fw_cfg.h).
KEY_SIGNATURE = 0x00
KEY_ID = 0x01
KEY_UUID = 0x02
KEY_RAM_SIZE = 0x03
KEY_NOGRAPHIC = 0x04
KEY_NB_CPUS = 0x05
KEY_MACHINE_ID = 0x06
KEY_BOOT_MENU = 0x0E
KEY_MAX_CPUS = 0x0F
KEY_FILE_DIR = 0x19
KEY_FILE_FIRST = 0x20
ENTRY_MASK = 0x3FFF
INVALID = 0xFFFF

ID_TRADITIONAL = 0x01
ID_DMA = 0x02
DMA_SIGNATURE = 0x51454D5520434647  # "QEMU CFG"

# FWCfgDmaAccess control bits.
DMA_CTL_ERROR = 0x01
DMA_CTL_READ = 0x02
DMA_CTL_SKIP = 0x04
DMA_CTL_SELECT = 0x08
DMA_CTL_WRITE = 0x10

# e820 entry types.
E820_RAM = 1
E820_RESERVED = 2
# QEMU 7.1+ reserves the AMD HyperTransport window below 1 TiB (hw/i386/pc.c).
HT_RESERVED_BASE = 0xFD_0000_0000
HT_RESERVED_SIZE = 0x3_0000_0000

# Files with a select callback or writable by the guest (fw_cfg_add_file_callback).
SELECT_CALLBACK_FILES = frozenset({FILE_FEATURES_OK})
WRITABLE_FILES = frozenset({FILE_REQUESTED})


class FwCfg(NamedTuple):
    entry: int = INVALID  # current selector (cur_entry)
    offset: int = 0
    dma_addr: int = 0


def reset() -> FwCfg:
    return FwCfg()


# Live migration (hw/nvram/fw_cfg.c vmstate_fw_cfg and its fw_cfg/dma subsection): the selected
# item, the read offset and the DMA address register.  Item contents are the destination's own,
# rebuilt from its command line; the SMI feature files follow the LPC's migrated fields.
VMSTATE = Vmstate("fw_cfg", lambda fc: ("entry", "offset", "dma_addr"))


def smbios_tables_size(cfg: PlatformConfig) -> int:
    """Size of QEMU's generated etc/smbios/smbios-tables.

    Measured on QEMU 7.2 (q35): 309 bytes for one socket, one DIMM and one RAM range; each
    further socket adds a type 4 structure (65 bytes), each further 16 GiB DIMM a type 17
    (53 bytes), and RAM above 4 GiB a second type 19 (33 bytes).
    """
    dimms = -(-cfg.ram_bytes // (16 << 30))
    return 309 + 65 * (cfg.topology.sockets - 1) + 53 * (dimms - 1) + (33 if cfg.above_4g else 0)


def e820_table(cfg: PlatformConfig) -> bytes:
    """etc/e820 as QEMU builds it: the HyperTransport hole, low RAM, then RAM above 4 GiB."""
    entries = [(HT_RESERVED_BASE, HT_RESERVED_SIZE, E820_RESERVED)] if cfg.hw.amd_ht_hole else []
    entries.append((0, cfg.below_4g, E820_RAM))
    if cfg.above_4g:
        entries.append((1 << 32, cfg.above_4g, E820_RAM))
    return b"".join(struct.pack("<QQI", a, n, t) for a, n, t in entries)


def files(cfg: PlatformConfig, smi: tuple[int, int, int]) -> list[tuple[str, bytes]]:
    """The named files, sorted by name as QEMU's directory lists them."""
    requested, features_ok, supported = smi
    table = [
        ("bios-geometry", b""),
        ("bootorder", b""),
        ("etc/acpi/rsdp", bytes(20)),
        ("etc/acpi/tables", bytes(131072)),
        ("etc/boot-fail-wait", struct.pack("<i", -1)),
        ("etc/e820", e820_table(cfg)),
        ("etc/smbios/smbios-anchor", bytes(31)),
        ("etc/smbios/smbios-tables", bytes(smbios_tables_size(cfg))),
        ("etc/system-states", bytes([0x80, 0x00, 0x00, 0x81, 0x82, 0x80])),
        ("etc/table-loader", bytes(4096)),
        ("etc/tpm/log", b""),
        ("genroms/kvmvapic.bin", bytes(9216)),
    ]
    if cfg.hw.supported_smi_features:  # ich9_lpc_realize: the files exist only if a feature does
        table += [
            (FILE_FEATURES_OK, bytes([features_ok])),
            (FILE_REQUESTED, struct.pack("<Q", requested)),
            (FILE_SUPPORTED, struct.pack("<Q", supported)),
        ]
    return sorted(table)


def file_key(cfg: PlatformConfig, name: str) -> int:
    for i, (n, _) in enumerate(files(cfg, (0, 0, 0))):
        if n == name:
            return KEY_FILE_FIRST + i
    raise KeyError(name)


def directory(cfg: PlatformConfig, smi: tuple[int, int, int]) -> bytes:
    entries = files(cfg, smi)
    out = [struct.pack(">I", len(entries))]
    for i, (name, data) in enumerate(entries):
        raw = name.encode()[:55]
        out.append(struct.pack(">IHH", len(data), KEY_FILE_FIRST + i, 0) + raw + bytes(56 - len(raw)))
    return b"".join(out)


def item(cfg: PlatformConfig, key: int, smi: tuple[int, int, int]) -> bytes | None:
    """Contents of the item a selector names (None: no such item)."""
    k = key & ENTRY_MASK
    if key & 0x8000:
        return None
    if k == KEY_SIGNATURE:
        return b"QEMU"
    if k == KEY_ID:
        return struct.pack("<I", ID_TRADITIONAL | ID_DMA)
    if k == KEY_UUID:
        return bytes(16)
    if k == KEY_RAM_SIZE:
        return struct.pack("<Q", cfg.ram_bytes)
    if k == KEY_NOGRAPHIC:
        return struct.pack("<H", 0)
    if k == KEY_NB_CPUS:
        return struct.pack("<H", cfg.boot_cpus)
    if k == KEY_MAX_CPUS:
        # Not the CPU count: one above the highest APIC ID (hw/i386/fw_cfg.c, apic_id_limit).
        return struct.pack("<H", cfg.topology.apic_id_limit)
    if k == KEY_BOOT_MENU:
        return struct.pack("<H", 0)
    if k == KEY_FILE_DIR:
        return directory(cfg, smi)
    if k >= KEY_FILE_FIRST:
        table = files(cfg, smi)
        i = k - KEY_FILE_FIRST
        if i < len(table):
            return table[i][1]
    return None


def file_name(cfg: PlatformConfig, key: int) -> str | None:
    k = key & ENTRY_MASK
    if key & 0x8000 or k < KEY_FILE_FIRST:
        return None
    table = files(cfg, (0, 0, 0))
    i = k - KEY_FILE_FIRST
    return table[i][0] if i < len(table) else None


def max_entry() -> int:
    # FW_CFG_MAX_ENTRY for x86 (FW_CFG_FILE_FIRST + fw_cfg_file_slots, 0x20 files).
    return KEY_FILE_FIRST + 0x20


# -- the device's registers ------------------------------------------------------------------
class Links(NamedTuple):
    """What the machine links into fw_cfg: the configuration its items describe, and the
    contents of the SMI feature files (the LPC's state; see ``lpc.smi_files``)."""

    cfg: PlatformConfig
    smi: tuple[int, int, int]


def select(fc: FwCfg, cfg: PlatformConfig, key: int) -> tuple[FwCfg, Effects]:
    """fw_cfg_select: a key beyond the table selects nothing."""
    if (key & ENTRY_MASK) >= max_entry():
        return fc._replace(entry=INVALID, offset=0), NONE
    fc = fc._replace(entry=key, offset=0)
    name = file_name(cfg, key)
    return fc, ((FileSelected(name),) if name in SELECT_CALLBACK_FILES else NONE)


def _current(fc: FwCfg, links: Links) -> bytes | None:
    if fc.entry == INVALID:
        return None
    return item(links.cfg, fc.entry, links.smi)


def port_read(fc: FwCfg, links: Links, offset: int, size: int) -> tuple[FwCfg, int, Effects]:
    """Data byte at the current offset (fw_cfg_comb_read answers data at either port)."""
    data = _current(fc, links)
    if data is None or fc.offset >= len(data):
        return fc, 0, NONE
    return fc._replace(offset=fc.offset + 1), data[fc.offset], NONE


def port_write(fc: FwCfg, links: Links, offset: int, size: int, value: int) -> tuple[FwCfg, Effects]:
    if size == 2 and offset == 0:
        return select(fc, links.cfg, value)
    return fc, NONE  # byte writes to the data port are ignored (QEMU 2.4+)


def dma_read(fc: FwCfg, links: Links, offset: int, size: int) -> tuple[FwCfg, int, Effects]:
    """The DMA address register reads back the "QEMU CFG" signature (big endian)."""
    shift = (8 - offset - size) * 8
    return fc, (DMA_SIGNATURE >> shift) & ((1 << (8 * size)) - 1), NONE


def dma_write(fc: FwCfg, links: Links, offset: int, size: int, value: int) -> tuple[FwCfg, Effects]:
    """Writing the low half (or all 64 bits at once) starts the transfer."""
    if size == 4 and offset == 0:
        return fc._replace(dma_addr=value << 32), NONE
    if size == 4 and offset == 4:
        return fc._replace(dma_addr=0), (StartDma(fc.dma_addr | value),)
    if size == 8 and offset == 0:
        return fc._replace(dma_addr=0), (StartDma(value),)
    return fc, NONE


# fw_cfg_comb_valid: bytes at either port, 16 bits only as a selector write.
PORT_OPS = Ops(
    "fwcfg",
    2,
    port_read,
    port_write,
    accepts=lambda off, size, w: size == 1 or (w and size == 2 and off == 0),
)
# fw_cfg_dma_mem_valid: reads of any size, writes of 32 bits at 0/4 or 64 bits at 0.
DMA_OPS = Ops(
    "fwcfg.dma",
    8,
    dma_read,
    dma_write,
    valid_max=8,
    impl_max=8,
    big_endian=True,
    accepts=lambda off, size, w: not w or (size == 4 and off in (0, 4)) or (size == 8 and off == 0),
)


# -- the DMA engine (fw_cfg_dma_transfer) ----------------------------------------------------------
class DmaHost(Protocol):
    """The machine's side of a transfer: guest memory through the DMA view, the device's
    current links, and the application of effects as they happen."""

    def read(self, addr: int, size: int) -> int: ...
    def write(self, addr: int, size: int, value: int) -> None: ...
    def fill(self, addr: int, size: int, byte: int) -> None: ...
    def links(self) -> Links: ...
    def apply(self, effects: Effects) -> None: ...


def dma_transfer(fc: FwCfg, desc_addr: int, host: DmaHost) -> FwCfg:
    """Read the FWCfgDmaAccess descriptor at ``desc_addr``, move the data, write back the status."""
    raw = host.read(desc_addr, 16).to_bytes(16, "little")
    control, length, address = struct.unpack(">IIQ", raw)
    cfg = host.links().cfg
    if control & DMA_CTL_SELECT:
        fc, effects = select(fc, cfg, control >> 16)
        host.apply(effects)
    read = write = False
    if control & DMA_CTL_READ:
        read = True
    elif control & DMA_CTL_WRITE:
        write = True
    elif not control & DMA_CTL_SKIP:
        length = 0
    status = 0
    name = file_name(cfg, fc.entry) if fc.entry != INVALID else None
    while length > 0 and not status & DMA_CTL_ERROR:
        data = _current(fc, host.links())
        if data is None or fc.offset >= len(data):
            n = length
            if read:
                host.fill(address, n, 0)
            if write:
                status |= DMA_CTL_ERROR
        else:
            n = min(length, len(data) - fc.offset)
            if read:
                host.write(address, n, int.from_bytes(data[fc.offset : fc.offset + n], "little"))
            if write:
                if name not in WRITABLE_FILES or n != length:
                    status |= DMA_CTL_ERROR
                else:
                    assert name is not None
                    blob = host.read(address, n).to_bytes(n, "little")
                    host.apply((FileWritten(name, fc.offset, blob),))
            fc = fc._replace(offset=fc.offset + n)
        address += n
        length -= n
    host.write(desc_addr, 4, int.from_bytes(struct.pack(">I", status), "little"))
    kind = "write" if write else "read" if read else "skip"
    host.apply((Note("io", f"fw_cfg DMA {kind} {name or hex(fc.entry)} status 0x{status:x}", detail=True),))
    return fc
