"""ICH9 LPC bridge (PCI 00:1f.0): PMBASE/ACPI I/O, APM ports, GPE0 and SMI feature negotiation.

The device's state; its PCI configuration registers; its port blocks as ``Ops`` — the APM
ports (``APM_OPS``, fixed at 0xb2) and the PM I/O block's sub-regions (``PM_REGIONS``, at
PMBASE once ACPI decoding is on); the callbacks of the SMI feature files it puts into fw_cfg;
the SCI level; and the hooks QEMU's CPU hotplug runs through it (GPE, plug/unplug refusals).
Semantics from QEMU hw/isa/lpc_ich9.c, hw/acpi/ich9.c, hw/acpi/core.c, hw/isa/apm.c (7.2).
"""

from __future__ import annotations

from typing import NamedTuple

from smm_hotplug.hw.config import SMI_F_BROADCAST, SMI_F_CPU_HOT_UNPLUG, SMI_F_CPU_HOTPLUG, PlatformConfig
from smm_hotplug.hw.effects import NONE, Effects, Note, RaiseSmi
from smm_hotplug.hw.iospace import Ops
from smm_hotplug.hw.vmstate import Vmstate

DEVFN = (0, 31, 0)  # bus 0, device 0x1f, function 0
VENDOR_ID = 0x8086
DEVICE_ID = 0x2918  # PCI_DEVICE_ID_INTEL_ICH9_8
REVISION_ID = 0x08
REVISION = 0x02  # ICH9_A2_LPC_REVISION (include/hw/i386/ich9.h)
HEADER_TYPE = 0x0E
HEADER_TYPE_MULTI_FUNCTION = 0x80  # QEMU creates it multifunction at 00:1f.0 (pc_q35.c)

PMBASE = 0x40  # ICH9_LPC_PMBASE, 32-bit; reset 0x1 (RTE)
PMBASE_MASK = 0xFF80  # ICH9_LPC_PMBASE_BASE_ADDRESS_MASK: where the PM block decodes
PMBASE_WMASK = 0xFF87  # writable bits, as measured on QEMU 7.2
ACPI_CTRL = 0x44  # ICH9_LPC_ACPI_CTRL
ACPI_CTRL_ACPI_EN = 0x80
GEN_PMCON_1 = 0xA0  # 16-bit
GEN_PMCON_1_SMI_LOCK = 0x10  # once set: itself and SMI_EN.GBL_SMI_EN are read-only
SMI_EN_GBL_SMI_EN = 1 << 0

# APM ports (hw/isa/apm.c, ICH9_APM_CNT / ICH9_APM_STS).
APM_CNT = 0xB2
APM_STS = 0xB3
APM_ACPI_ENABLE = 2  # ICH9_APM_ACPI_ENABLE: sets PM1_CNT.SCI_EN, no SMI
APM_ACPI_DISABLE = 3
APM_CPU_HOTPLUG = 4  # ICH9_APM_CNT_CPU_HOTPLUG: what QEMU's AML writes for CPU hotplug

# Offsets in the PM I/O block at PMBASE (ICH9_PMIO_*).
PM1_STS = 0x00
PM1_EN = 0x02
PM1_CNT = 0x04
PM_TMR = 0x08
GPE0_STS = 0x20
GPE0_LEN = 0x10  # 8 status bytes then 8 enable bytes
SMI_EN = 0x30
SMI_STS = 0x34
PM1_CNT_SCI_EN = 0x0001
SMI_EN_APMC_EN = 1 << 5
GPE0_CPU_HOTPLUG = 1 << 2  # ACPI_CPU_HOTPLUG_STATUS: GPE0 bit 2

# SMI feature negotiation files (fw_cfg), hw/isa/lpc_ich9.c.
FILE_SUPPORTED = "etc/smi/supported-features"
FILE_REQUESTED = "etc/smi/requested-features"
FILE_FEATURES_OK = "etc/smi/features-ok"


class Lpc(NamedTuple):
    pmbase: int = 0x1
    acpi_ctrl: int = 0
    gen_pmcon_1: int = 0
    apm_cnt: int = 0
    apm_sts: int = 0
    pm1_sts: int = 0
    pm1_en: int = 0
    pm1_cnt: int = 0
    gpe0_sts: int = 0  # 64 bits, byte i = GPE0_STS+i
    gpe0_en: int = 0
    smi_en: int = 0
    smi_sts: int = 0
    smi_requested: int = 0  # contents of etc/smi/requested-features (little endian)
    smi_features_ok: int = 0
    smi_negotiated: int = 0


def reset() -> Lpc:
    return Lpc()


def pm_io_base(lpc: Lpc) -> int | None:
    """Where the PM I/O block decodes, if at all (ich9_lpc_pmbase_sci_update)."""
    if not lpc.acpi_ctrl & ACPI_CTRL_ACPI_EN:
        return None
    base = lpc.pmbase & PMBASE_MASK
    return base or None


def config_read_byte(lpc: Lpc, reg: int) -> int:
    if reg in (0, 1):
        return (VENDOR_ID >> (8 * reg)) & 0xFF
    if reg in (2, 3):
        return (DEVICE_ID >> (8 * (reg - 2))) & 0xFF
    if reg == REVISION_ID:
        return REVISION
    if reg == 0x0B:
        return 0x06
    if reg == 0x0A:
        return 0x01
    if reg == HEADER_TYPE:
        return HEADER_TYPE_MULTI_FUNCTION
    if PMBASE <= reg < PMBASE + 4:
        return (lpc.pmbase >> (8 * (reg - PMBASE))) & 0xFF
    if reg == ACPI_CTRL:
        return lpc.acpi_ctrl
    if reg in (GEN_PMCON_1, GEN_PMCON_1 + 1):
        return (lpc.gen_pmcon_1 >> (8 * (reg - GEN_PMCON_1))) & 0xFF
    return 0


def config_write(lpc: Lpc, cfg: PlatformConfig, reg: int, size: int, value: int) -> tuple[Lpc, Effects]:
    """A PCI config write of ``size`` bytes at ``reg`` (ich9_lpc_config_write)."""
    return _config_write(lpc, reg, size, value), NONE


def _config_write(lpc: Lpc, reg: int, size: int, value: int) -> Lpc:
    pmbase, acpi_ctrl, pmcon = lpc.pmbase, lpc.acpi_ctrl, lpc.gen_pmcon_1
    for i in range(size):
        r = reg + i
        b = (value >> (8 * i)) & 0xFF
        if PMBASE <= r < PMBASE + 4:
            shift = 8 * (r - PMBASE)
            wm = (PMBASE_WMASK >> shift) & 0xFF
            pmbase = (pmbase & ~(wm << shift)) | ((b & wm) << shift)
        elif r == ACPI_CTRL:
            acpi_ctrl = b
        elif r in (GEN_PMCON_1, GEN_PMCON_1 + 1):
            shift = 8 * (r - GEN_PMCON_1)
            wm = 0xFF & ~((GEN_PMCON_1_SMI_LOCK if pmcon & GEN_PMCON_1_SMI_LOCK else 0) >> shift)
            pmcon = (pmcon & ~(wm << shift)) | ((b & wm) << shift)
    return lpc._replace(pmbase=pmbase, acpi_ctrl=acpi_ctrl, gen_pmcon_1=pmcon)


def sci_level(lpc: Lpc) -> bool:
    """acpi_update_sci: PM1 events or GPE0 byte 0 status & enable."""
    if lpc.pm1_sts & lpc.pm1_en & 0x0521:  # TMROF | GBL | PWRBTN | RTC enables
        return True
    return bool(lpc.gpe0_sts & lpc.gpe0_en & 0xFF)


def raise_gpe(lpc: Lpc, bits: int) -> Lpc:
    return lpc._replace(gpe0_sts=lpc.gpe0_sts | bits)


# -- PM I/O block registers -----------------------------------------------------------------
def pm_read(lpc: Lpc, offset: int, size: int) -> int:
    if offset == PM1_STS:
        return lpc.pm1_sts
    if offset == PM1_EN:
        return lpc.pm1_en
    if offset == PM1_CNT:
        return lpc.pm1_cnt
    if GPE0_STS <= offset < GPE0_STS + GPE0_LEN:
        i = offset - GPE0_STS
        if i < 8:
            return (lpc.gpe0_sts >> (8 * i)) & 0xFF
        return (lpc.gpe0_en >> (8 * (i - 8))) & 0xFF
    if offset == SMI_EN:
        return lpc.smi_en
    if offset == SMI_STS:
        return lpc.smi_sts
    return 0


def pm_write(lpc: Lpc, offset: int, size: int, value: int) -> Lpc:
    if offset == PM1_STS:
        return lpc._replace(pm1_sts=lpc.pm1_sts & ~value)
    if offset == PM1_EN:
        return lpc._replace(pm1_en=value & 0xFFFF)
    if offset == PM1_CNT:
        return lpc._replace(pm1_cnt=value & 0xFFFF & ~0x2000)  # SLP_EN self-clears
    if GPE0_STS <= offset < GPE0_STS + GPE0_LEN:
        i = offset - GPE0_STS
        if i < 8:  # status bytes are write-1-to-clear
            return lpc._replace(gpe0_sts=lpc.gpe0_sts & ~((value & 0xFF) << (8 * i)))
        shift = 8 * (i - 8)
        en = (lpc.gpe0_en & ~(0xFF << shift)) | ((value & 0xFF) << shift)
        return lpc._replace(gpe0_en=en)
    if offset == SMI_EN:
        wmask = 0xFFFFFFFF & ~(SMI_EN_GBL_SMI_EN if lpc.gen_pmcon_1 & GEN_PMCON_1_SMI_LOCK else 0)
        return lpc._replace(smi_en=(lpc.smi_en & ~wmask) | (value & wmask))
    if offset == SMI_STS:
        return lpc._replace(smi_sts=lpc.smi_sts & ~value)
    return lpc


def _pm_ops(name: str, offset: int, size: int, **sizes: int) -> Ops:
    """A sub-region of the PM I/O block starting at ``offset`` in it."""

    def read(lpc: Lpc, _links: None, off: int, size: int) -> tuple[Lpc, int, Effects]:
        return lpc, pm_read(lpc, offset + off, size), NONE

    def write(lpc: Lpc, _links: None, off: int, size: int, value: int) -> tuple[Lpc, Effects]:
        return pm_write(lpc, offset + off, size, value), NONE

    return Ops(name, size, read, write, **sizes)


# The PM I/O block at PMBASE as QEMU registers it (acpi_pm1_evt/cnt/tmr_init, acpi_gpe_init,
# ich9_pm_init's "acpi-smi"): (offset in the block, ops).
PM_REGIONS: tuple[tuple[int, Ops], ...] = (
    (PM1_STS, _pm_ops("acpi-evt", PM1_STS, 4, valid_max=2, impl_min=2)),
    (PM1_CNT, _pm_ops("acpi-cnt", PM1_CNT, 2, valid_max=2, impl_min=2)),
    (PM_TMR, _pm_ops("acpi-tmr", PM_TMR, 4, valid_min=4)),
    (GPE0_STS, _pm_ops("acpi-gpe0", GPE0_STS, GPE0_LEN, impl_max=1)),
    (SMI_EN, _pm_ops("acpi-smi", SMI_EN, 8, valid_min=4)),
)


# -- APM ports (hw/isa/apm.c + ich9_apm_ctrl_changed) ----------------------------------------
def apm_read(lpc: Lpc, _links: None, offset: int, size: int) -> tuple[Lpc, int, Effects]:
    return lpc, lpc.apm_cnt if offset == 0 else lpc.apm_sts, NONE


def apm_write(lpc: Lpc, _links: None, offset: int, size: int, value: int) -> tuple[Lpc, Effects]:
    """A byte written to 0xb2/0xb3; APM_CNT may raise an SMI (to every CPU once broadcast SMI
    is negotiated, else to the CPU that wrote it)."""
    if offset == 1:
        return lpc._replace(apm_sts=value), NONE
    lpc = lpc._replace(apm_cnt=value)
    note = Note("io", f"APM_CNT <- 0x{value:02x}")
    # ich9_apm_ctrl_changed: ACPI enable/disable touch SCI_EN only.
    if value == APM_ACPI_ENABLE:
        return lpc._replace(pm1_cnt=lpc.pm1_cnt | PM1_CNT_SCI_EN), (note,)
    if value == APM_ACPI_DISABLE:
        return lpc._replace(pm1_cnt=lpc.pm1_cnt & ~PM1_CNT_SCI_EN), (note,)
    if not lpc.smi_en & SMI_EN_APMC_EN:
        return lpc, (note,)
    return lpc, (note, RaiseSmi(broadcast=bool(lpc.smi_negotiated & SMI_F_BROADCAST)))


APM_OPS = Ops("apm", 2, apm_read, apm_write, impl_max=1)


# -- SMI feature negotiation: the fw_cfg files' callbacks (ich9_lpc_realize) -----------------
def smi_files(lpc: Lpc, cfg: PlatformConfig) -> tuple[int, int, int]:
    """Contents of etc/smi/requested-features, features-ok and supported-features."""
    return lpc.smi_requested, lpc.smi_features_ok, cfg.hw.supported_smi_features


def file_selected(lpc: Lpc, cfg: PlatformConfig, name: str) -> tuple[Lpc, Effects]:
    """smi_features_ok_callback runs when etc/smi/features-ok is selected."""
    if name != FILE_FEATURES_OK:
        return lpc, NONE
    after = features_ok_selected(lpc, cfg.hw.supported_smi_features)
    if after.smi_features_ok and not lpc.smi_features_ok:
        return after, (Note("hw", f"fw_cfg: SMI features negotiated: 0x{after.smi_negotiated:x}"),)
    if not after.smi_features_ok:
        return after, (Note("hw", f"fw_cfg: SMI feature request 0x{after.smi_requested:x} rejected"),)
    return after, NONE


def file_written(lpc: Lpc, name: str, offset: int, data: bytes) -> tuple[Lpc, Effects]:
    """The guest wrote part of etc/smi/requested-features (its backing store is the LPC's)."""
    if name != FILE_REQUESTED:
        return lpc, NONE
    cur = bytearray(lpc.smi_requested.to_bytes(8, "little"))
    cur[offset : offset + len(data)] = data
    value = int.from_bytes(cur[:8], "little")
    lpc = lpc._replace(smi_requested=value)
    return lpc, (Note("hw", f"fw_cfg: etc/smi/requested-features <- 0x{value:x}"),)


def features_ok_selected(lpc: Lpc, supported: int) -> Lpc:
    """smi_features_ok_callback: validate the request when etc/smi/features-ok is selected."""
    if lpc.smi_features_ok:
        return lpc  # negotiation complete, features locked
    req = lpc.smi_requested
    if req & ~supported:
        return lpc
    hotplug = req & (SMI_F_CPU_HOTPLUG | SMI_F_CPU_HOT_UNPLUG)
    if hotplug and not req & SMI_F_BROADCAST:
        return lpc  # CPU hot-(un)plug with SMI requires broadcast
    if hotplug == SMI_F_CPU_HOT_UNPLUG:
        return lpc  # hot-unplug without hotplug is unsupported
    return lpc._replace(smi_negotiated=req, smi_features_ok=1)


# QEMU 5.2's refusals of CPU hotplug the firmware cannot handle, by history-catalog id
# (``HardwareFeatures.reverted`` takes one out): "x86: cpuhp: prevent guest crash on CPU hotplug
# when broadcast SMI is in use" (2020-09) ...
FIX_REFUSE_PLUG = "qemu-cpuhp-refuse-plug-without-smi"
# ... and "x86: cpuhp: refuse cpu hot-unplug request earlier if not supported" (2020-07/09).
FIX_REFUSE_UNPLUG = "qemu-cpuhp-refuse-unplug-without-smi"


def plug_refusal(lpc: Lpc, reverted: frozenset[str] = frozenset()) -> str | None:
    """ich9_pm_device_pre_plug_cb for a CPU (``reverted``: HardwareFeatures.reverted)."""
    neg = lpc.smi_negotiated
    if neg & SMI_F_BROADCAST and not neg & SMI_F_CPU_HOTPLUG and FIX_REFUSE_PLUG not in reverted:
        return "cpu hotplug with SMI wasn't enabled by firmware"
    return None


def unplug_refusal(lpc: Lpc, modern: bool, driver: str, reverted: frozenset[str] = frozenset()) -> str | None:
    """ich9_pm_device_unplug_request_cb for a CPU (legacy hotplug cannot unplug CPUs)."""
    if not modern:
        return f"acpi: device unplug request for not supported device type: {driver}"
    neg = lpc.smi_negotiated
    if neg & SMI_F_BROADCAST and not neg & SMI_F_CPU_HOT_UNPLUG and FIX_REFUSE_UNPLUG not in reverted:
        return "cpu hot-unplug with SMI wasn't enabled by firmware"
    return None


# -- live migration (hw/isa/lpc_ich9.c vmstate_ich9_lpc, hw/isa/apm.c, hw/acpi/ich9.c) ---------
# PCI configuration (PMBASE, ACPI_CTRL, GEN_PMCON_1), the APM ports (no callback on load, so no
# SMI) and the PM registers always travel.
_VMSTATE_FIELDS = (
    "pmbase",
    "acpi_ctrl",
    "gen_pmcon_1",
    "apm_cnt",
    "apm_sts",
    "pm1_sts",
    "pm1_en",
    "pm1_cnt",
    "gpe0_sts",
    "gpe0_en",
    "smi_en",
    "smi_sts",
)
# Subsection ICH9LPC/smi_feat, needed once the guest requested features or they were accepted
# (ich9_lpc_smi_feat_needed); otherwise the destination's reset zeros equal the source's.
_SMI_FEAT_FIELDS = ("smi_requested", "smi_features_ok", "smi_negotiated")


def _sent(lpc: Lpc) -> tuple[str, ...]:
    needed = lpc.smi_requested != 0 or lpc.smi_features_ok != 0
    return _VMSTATE_FIELDS + (_SMI_FEAT_FIELDS if needed else ())


# ich9_lpc_post_load re-maps the PM block at PMBASE, re-routes the SCI and re-derives the
# SMI_LOCK write masks from GEN_PMCON_1; this model derives all three from the values already.
VMSTATE = Vmstate("ICH9LPC", _sent)
