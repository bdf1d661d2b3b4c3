"""Firmware boot: from the reset vector to the OS, as OVMF does it on q35 (firmware-facts.md).

Program PMBASE and SMI_EN → negotiate SMI features over fw_cfg → size and enable TSEG with a
tile per possible CPU → wake the APs → relocate every CPU present at boot through 0x38000
(while the default-SMBASE window is still ordinary RAM) → install the hotplug first-SMI
handler, its context and the pen → ready-to-lock SMI → lock the window (0x9c) and SMRAM
(D_LCK) → E820 and ACPI data for the OS → load and start the OS.

Boot runs on the BSP alone (APs only act when it sends them SMIs), before any OS or device
DMA exists, so a boot step may batch several accesses to the firmware's own memory.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from smm_hotplug.code import PROGRAMS, program
from smm_hotplug.firmware import layout as L
from smm_hotplug.firmware.options import FIX_NEGOTIATE_SMI_FEATURES, RELOC_FIRST_SMI, RELOC_MSR
from smm_hotplug.hw import cpuhp, fw_cfg, lpc, mch
from smm_hotplug.hw.config import MIB, SMI_F_CPU_HOT_UNPLUG, SMI_F_CPU_HOTPLUG
from smm_hotplug.hw.cpu import ALL_EXCLUDING_SELF, DM_INIT, DM_SIPI, DM_SMI, SS_RIP, SS_SMBASE

OS_ENTRY = 0x100000

boot = program("fw.boot", "firmware", size=0x10000, doc="firmware boot path (flash)")


class Boot(NamedTuple):
    keys: tuple[tuple[str, int], ...] = ()
    supported: int = 0
    negotiated: int = 0
    window: bool = False
    aps: tuple[int, ...] = ()  # APIC IDs of the CPUs to relocate, BSP last
    idx: int = 0
    pen: int = 0  # the Post-SMM Pen page CpuHotplugSmm allocated


def _bswap32(v: int) -> int:
    return int.from_bytes(v.to_bytes(4, "little"), "big")


def fwcfg_dma(b, control: int, length: int, buf: int) -> int:
    """One fw_cfg DMA transfer described at DMA_DESC; returns the written-back control."""
    desc = struct.pack(">IIQ", control, length, buf)
    b.wr(L.DMA_DESC, 16, int.from_bytes(desc, "little"))
    b.out(fw_cfg.PORT_DMA, 4, 0)
    b.out(fw_cfg.PORT_DMA + 4, 4, _bswap32(L.DMA_DESC))
    return _bswap32(b.rd(L.DMA_DESC, 4))


def _key(r: Boot, name: str) -> int:
    return dict(r.keys)[name]


@boot.step("entry")
def _pmbase(b, r):
    # The reset vector reached again after boot: the BSP after an INIT, or an AP whose SMI or
    # NMI interrupted its reset state (TCG).  OVMF's PlatformPei sees ACPI I/O already enabled
    # (AcpiPmControl skips PMBASE then), but its SEC/PEI have no path for a machine already
    # booted; the model does not follow the CPU into them and stops it here.
    if b.apic_id != L.BSP_APIC_ID or b.pci_read(lpc.DEVFN, lpc.ACPI_CTRL, 1) & lpc.ACPI_CTRL_ACPI_EN:
        b.note("firmware: reset vector reached after boot; the model stops this CPU here")
        return "stopped"
    b.note("firmware: reset vector; programming PMBASE, ACPI_CNTL and SMI_EN")
    b.pci_write(lpc.DEVFN, lpc.PMBASE, 4, L.PMBASE)
    b.pci_write(lpc.DEVFN, lpc.ACPI_CTRL, 1, lpc.ACPI_CTRL_ACPI_EN)
    b.out(L.PMBASE + lpc.SMI_EN, 4, lpc.SMI_EN_APMC_EN | 1)  # APMC_EN | GBL_SMI_EN
    return "cpuhp_modern", Boot()


@boot.step("cpuhp_modern")
def _cpuhp_modern(b, r: Boot):
    # Writing 0 to the legacy bitmap's first byte switches QEMU to the modern interface;
    # then the sanity check OVMF does: command 0 from selector 0 leaves data 2 at zero.
    b.out(cpuhp.BASE + cpuhp.SELECTOR, 4, 0)
    b.out(cpuhp.BASE + cpuhp.SELECTOR, 4, 0)
    b.out(cpuhp.BASE + cpuhp.COMMAND, 1, cpuhp.CMD_GET_NEXT_WITH_EVENT)
    if b.inp(cpuhp.BASE + cpuhp.SELECTOR, 4) != 0:
        b.note("firmware: modern CPU hotplug interface missing")
    return "fwcfg_dir"


@boot.step("fwcfg_dir")
def _fwcfg_dir(b, r: Boot):
    size = 4 + 64 * 32
    fwcfg_dma(b, (fw_cfg.KEY_FILE_DIR << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_READ, size, L.DMA_BUF)
    raw = b.rd_bytes(L.DMA_BUF, size)
    count = struct.unpack(">I", raw[:4])[0]
    keys = []
    for i in range(min(count, 32)):
        ent = raw[4 + 64 * i : 4 + 64 * (i + 1)]
        keys.append((ent[8:].rstrip(b"\0").decode(), struct.unpack(">H", ent[4:6])[0]))
    return "smi_supported", r._replace(keys=tuple(keys))


@boot.step("smi_supported")
def _smi_supported(b, r: Boot):
    if not b.opt.has_fix(FIX_NEGOTIATE_SMI_FEATURES):
        # Before fe89a63da4 (2026-05): the boot path through MmControlPei enabled APM SMIs and
        # locked SMI_EN but never negotiated, so QEMU keeps raising an APM SMI on the writing CPU
        # only, and offers no SMI on CPU hotplug.
        b.note("firmware: this boot path negotiates no SMI features")
        return "tseg", r
    key = _key(r, fw_cfg.FILE_SUPPORTED)
    fwcfg_dma(b, (key << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_READ, 8, L.DMA_BUF)
    return "smi_request", r._replace(supported=struct.unpack("<Q", b.rd_bytes(L.DMA_BUF, 8))[0])


@boot.step("smi_request")
def _smi_request(b, r: Boot):
    request = b.opt.request_features & r.supported
    b.wr(L.DMA_BUF, 8, request)
    key = _key(r, fw_cfg.FILE_REQUESTED)
    fwcfg_dma(b, (key << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_WRITE, 8, L.DMA_BUF)
    return "smi_ok", r._replace(negotiated=request)


@boot.step("smi_ok")
def _smi_ok(b, r: Boot):
    b.out(fw_cfg.PORT_SELECTOR, 2, _key(r, fw_cfg.FILE_FEATURES_OK))
    ok = b.inp(fw_cfg.PORT_DATA, 1)
    negotiated = r.negotiated if ok == 1 else 0
    b.note(
        f"firmware: SMI features negotiated 0x{negotiated:x}" if ok else "firmware: SMI negotiation failed"
    )
    return "tseg", r._replace(negotiated=negotiated)


@boot.step("tseg")
def _tseg(b, r: Boot):
    fwcfg_dma(b, (fw_cfg.KEY_RAM_SIZE << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_READ, 8, L.DMA_BUF)
    ram = struct.unpack("<Q", b.rd_bytes(L.DMA_BUF, 8))[0]
    b.pci_write(mch.DEVFN, mch.EXT_TSEG_MBYTES, 2, mch.EXT_TSEG_QUERY)
    ext = b.pci_read(mch.DEVFN, mch.EXT_TSEG_MBYTES, 2)
    lay = L.smram_layout(b.cfg)
    low = min(ram, 0x80000000 if ram >= 0xB0000000 else 0xB0000000)
    assert lay.tseg_size == (ext if ext not in (0, 0xFFFF) else 8) * MIB and lay.tseg_end == low
    # Fill SMRAM while TSEG is still ordinary RAM: CPU_HOT_PLUG_DATA, the rendezvous state,
    # CPU_HOT_EJECT_DATA (an empty QemuSelectorMap, InitCpuHotEjectData), CpuHotplugSmm's record
    # of the pen page it allocates below 1 MiB, the core, the tiles.
    pen = L.post_smm_pen_page()
    writes = [
        (lay.counter, 4, 0),
        (lay.inside_smm, 1, 0),
        (lay.all_cpus_in_sync, 1, 0),
        (lay.bsp_index, 4, L.NO_BSP),
        (lay.eject_handler, 8, 0),
        (lay.post_smm_pen, 4, pen),
    ]
    for i in range(lay.max_cpus):
        writes.append((lay.apic_id_slot(i), 8, L.INVALID_APIC_ID))
        writes.append((lay.smbase_slot(i), 8, lay.tile_smbase(i)))
        writes += [(lay.present(i), 1, 0), (lay.run(i), 4, 0), (lay.selector_map(i), 8, L.NO_SELECTOR)]
    b.wr_many(writes)
    b.install(lay.smm_core, "fw.smm_core")
    for i in range(lay.max_cpus):
        b.install(lay.tile_entry(i), "fw.smi_entry")
    b.note(f"firmware: SMRAM prepared: {lay.max_cpus} SMBASE tiles from 0x{lay.tile_smbase(0):x}")
    return "tseg_enable", r._replace(pen=pen)


@boot.step("tseg_enable")
def _tseg_enable(b, r: Boot):
    lay = L.smram_layout(b.cfg)
    size_bits = mch.ESMRAMC_TSEG_SZ_EXT if b.cfg.ext_tseg_mb else mch.ESMRAMC_TSEG_SZ_8MB
    b.pci_write(mch.DEVFN, mch.ESMRAMC, 1, mch.ESMRAMC_T_EN | size_bits)
    b.pci_write(mch.DEVFN, mch.SMRAM, 1, mch.SMRAM_G_SMRAME | mch.SMRAM_C_BASE_SEG)
    b.claim_smram(lay.tseg_base, lay.tseg_size)
    return "ap_init"


@boot.step("ap_init")
def _ap_init(b, r: Boot):
    b.install(L.AP_PARK, "fw.ap_park")
    b.ipi(ALL_EXCLUDING_SELF, DM_INIT)
    return "ap_sipi"


@boot.step("ap_sipi")
def _ap_sipi(b, r: Boot):
    b.ipi(ALL_EXCLUDING_SELF, DM_SIPI, L.AP_PARK >> 12)
    return "ap_count"


@boot.step("ap_count", waits="spins in the boot wait for every AP to check in")
def _ap_count(b, r: Boot):
    # MpInitLib: wait until every AP fw_cfg reports has checked in with its APIC ID.
    fwcfg_dma(b, (fw_cfg.KEY_NB_CPUS << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_READ, 2, L.DMA_BUF)
    expected = struct.unpack("<H", b.rd_bytes(L.DMA_BUF, 2))[0]
    if b.opt.relocate_all_slots_at_boot:
        expected = b.cfg.max_cpus
    seen = b.rd_bytes(AP_LIST, 256)
    aps = tuple(a for a in range(256) if seen[a])
    if len(aps) + 1 < expected:
        return None
    b.install(L.FIRST_SMI_HANDLER, "fw.reloc_stub")
    b.install(L.RELOC_DONE_CODE, "fw.reloc_done")
    return "reloc_next", r._replace(aps=(*aps, b.apic_id), idx=0)


@boot.step("stopped")
def _stopped(b, r):
    b.cli()
    b.hlt()
    return "stopped"


def _slot_of(b, apic: int) -> int:
    slot = b.cfg.slot_of_apic(apic)
    assert slot is not None
    return slot


@boot.step("reloc_next")
def _reloc_next(b, r: Boot):
    if r.idx >= len(r.aps):
        return "restore", r
    apic = r.aps[r.idx]
    b.wr_many([(L.RELOC_SLOT, 4, _slot_of(b, apic)), (L.RELOC_DONE, 1, 0)])
    b.ipi(apic, DM_SMI)
    return "reloc_wait", r


@boot.step("reloc_wait", waits="spins in the boot wait for an SMBASE relocation to finish")
def _reloc_wait(b, r: Boot):
    if b.rd(L.RELOC_DONE, 1) != 1:
        return None
    return "reloc_next", r._replace(idx=r.idx + 1)


@boot.step("restore")
def _restore(b, r: Boot):
    # Put back what was at 0x38000 before the relocation stub (SmmRelocateBases restores its
    # backup): nothing, on a fresh boot — the stub is gone.
    b.erase(L.FIRST_SMI_HANDLER, PROGRAMS["fw.reloc_stub"].size)
    b.pci_write(mch.DEVFN, mch.F_SMBASE, 1, mch.F_SMBASE_QUERY)
    window = b.pci_read(mch.DEVFN, mch.F_SMBASE, 1) == mch.F_SMBASE_IN_RAM
    b.note("firmware: SMRAM at default SMBASE " + ("present" if window else "absent"))
    return "hotplug_install", r._replace(window=window)


@boot.step("hotplug_install")
def _hotplug_install(b, r: Boot):
    mode = b.opt.relocation
    if mode == RELOC_FIRST_SMI:
        # SmbaseInstallFirstSmiHandler: the handler, and the gate closed.
        b.install(L.FIRST_SMI_HANDLER, "fw.first_smi")
        b.wr(L.CTX_GATE, 8, L.INVALID_APIC_ID)
        b.install(r.pen, "fw.pen")
        b.note(f"firmware: Post-SMM Pen at 0x{r.pen:x}")
        if r.window:
            b.claim_smram(mch.WINDOW_BASE, mch.WINDOW_SIZE)
    elif mode == RELOC_MSR:
        b.install(L.FIRST_SMI_HANDLER, "fw.first_smi_rsm")
        b.install(L.MSR_TRAMPOLINE, "fw.msr_trampoline")
    return "ready_to_lock", r


@boot.step("ready_to_lock")
def _ready_to_lock(b, r: Boot):
    b.out(lpc.APM_CNT, 1, L.APM_FW_READY_TO_LOCK)
    return "lock", r


@boot.step("lock")
def _lock(b, r: Boot):
    if r.window and b.opt.lock_window:
        b.pci_write(mch.DEVFN, mch.F_SMBASE, 1, mch.F_SMBASE_LCK)
    if b.opt.lock_smram:
        b.pci_write(mch.DEVFN, mch.SMRAM, 1, mch.SMRAM_D_LCK | mch.SMRAM_G_SMRAME | mch.SMRAM_C_BASE_SEG)
    return "handoff", r


def e820_for_os(b, r: Boot) -> list[tuple[int, int, int]]:
    lay = L.smram_layout(b.cfg)
    # Firmware pages below 1 MiB — AP park, trampolines and the pen (EfiReservedMemoryType) — are
    # reserved up to the end of base memory: the OS keeps off them.
    low = min(*L.FIXED_LOW_PAGES, r.pen or L.BASE_MEMORY_END)
    entries = []
    if b.opt.reserve_default_smbase or r.window:
        top = 0x50000 if r.window else 0x40000
        entries += [(0, 0x30000, 1), (0x30000, top - 0x30000, 2), (top, low - top, 1)]
    else:
        entries.append((0, low, 1))
    entries.append((low, L.BASE_MEMORY_END - low, 2))
    entries.append((0x100000, lay.tseg_base - 0x100000, 1))
    entries.append((lay.tseg_base, lay.tseg_size, 2))
    if b.cfg.above_4g:
        entries.append((1 << 32, b.cfg.above_4g, 1))
    return entries


@boot.step("handoff")
def _handoff(b, r: Boot):
    e820 = e820_for_os(b, r)
    flags = (1 if r.negotiated & SMI_F_CPU_HOTPLUG else 0) | (2 if r.negotiated & SMI_F_CPU_HOT_UNPLUG else 0)
    writes = [
        (L.HANDOFF_PMBASE, 4, L.PMBASE),
        (L.HANDOFF_FLAGS, 1, flags),
        (L.HANDOFF_E820_COUNT, 4, len(e820)),
    ]
    for i, (base, length, kind) in enumerate(e820):
        at = L.HANDOFF_E820 + 20 * i
        writes += [(at, 8, base), (at + 8, 8, length), (at + 16, 4, kind)]
    boot_apics = [a for a in r.aps if a != b.apic_id][: b.cfg.boot_cpus - 1]
    writes.append((L.HANDOFF_BOOT_CPUS, 1, len(boot_apics)))
    writes += [(L.HANDOFF_BOOT_CPUS + 1 + i, 1, a) for i, a in enumerate(boot_apics)]
    b.wr_many(writes)
    b.load_image()
    b.note("firmware: ExitBootServices, jumping to the OS")
    b.jump(OS_ENTRY, "entry")
    return "handoff"


# -- helpers that run on other CPUs during boot ------------------------------------------------
AP_LIST = 0x8F800  # one byte per APIC ID, set by each AP that checked in

ap_park = program("fw.ap_park", "firmware", size=0x800, doc="boot AP wait loop")


@ap_park.step("entry")
def _ap_checkin(b, r):
    b.wr(AP_LIST + b.apic_id, 1, 1)
    return "park"


@ap_park.step("park", waits="is halted in the firmware's AP wait loop")
def _ap_halt(b, r):
    b.cli()
    b.hlt()
    return "park"


reloc_stub = program(
    "fw.reloc_stub", "firmware", size=0x100, doc="boot-time SMBASE relocation stub at 0x38000"
)


@reloc_stub.step("entry")
def _stub_slot(b, r):
    slot = b.rd(L.RELOC_SLOT, 4)
    return "smbase", (slot,)


@reloc_stub.step("smbase")
def _stub_smbase(b, r):
    slot = r[0]
    new = b.rd(L.smram_layout(b.cfg).smbase_slot(slot), 8)
    return "store", (slot, new)


@reloc_stub.step("store")
def _stub_store(b, r):
    slot, new = r
    b.wr(b.smbase + SS_SMBASE, 4, new)
    b.wr(L.smram_layout(b.cfg).apic_id_slot(slot), 8, b.apic_id)
    b.note(f"boot relocation: APIC ID {b.apic_id} -> SMBASE 0x{new:x}")
    return "hook", r


@reloc_stub.step("hook")
def _stub_hook(b, r):
    # SemaphoreHook: return from RSM into fw.reloc_done, which reports completion.
    rip = b.rd_obj(b.smbase + SS_RIP)
    b.put_sym(L.RELOC_ORIG_RIP, rip.value if rip is not None else ("rip", None), 8)
    b.wr(b.smbase + SS_RIP, 8, L.RELOC_DONE_CODE)
    return "rsm", r


@reloc_stub.step("rsm")
def _stub_rsm(b, r):
    b.rsm()
    return "rsm"


reloc_done = program("fw.reloc_done", "firmware", size=0x100, doc="runs right after a boot relocation RSM")


@reloc_done.step("entry")
def _reloc_done(b, r):
    orig = b.rd_obj(L.RELOC_ORIG_RIP)
    b.wr(L.RELOC_DONE, 1, 1)
    pc = orig.value[1] if orig is not None and orig.kind == "sym" else None
    if pc is None:
        b.cli()
        b.hlt()
        return "entry"
    b.jump(pc[0], pc[1], r)
    return "entry"
