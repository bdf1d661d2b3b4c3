"""A SeaBIOS-like firmware for the QEMU-compatible endpoint.

Debian's QEMU has no qtest accelerator: under ``-qtest`` its default firmware, SeaBIOS, boots
on TCG in the background, so a qtest client meets the machine *as SeaBIOS left it*.  This
program does what SeaBIOS does to the registers the model has (ich9_lpc_apmc_smm_setup and
smm_relocate_and_restore in SeaBIOS's smm.c), so that the endpoint answers a qtest session
the way QEMU does:

* PMBASE 0x600 (RTE kept), ACPI enabled in ACPI_CNTL, SMI_EN = APMC_EN | GBL_SMI_EN, SMI_LOCK;
* the BSP's SMBASE relocated to 0xa0000 through a handler at 0x38000, in the temporary low zone
  (0x7000..0x8ffff) SeaBIOS clears at every POST — so after a reset it reads zero again;
* SMRAM "closed and enabled" (MCH 0x9d = 0x0a), not locked;
* then it halts, as SeaBIOS does when there is nothing to boot.
"""

from __future__ import annotations

from smm_hotplug.code import program
from smm_hotplug.hw import lpc, mch
from smm_hotplug.hw.cpu import SS_SMBASE

PMBASE = 0x600
BUILD_SMM_INIT_HANDLER = 0x38000
BUILD_SMM_SMBASE = 0xA0000  # handler at 0xa8000, in the A/B segment SMRAM
# SeaBIOS's temporary low-memory zone, cleared at every POST (measured: 0x7000..0x8ffff).
ZONE_TMP_LOW = (0x7000, 0x90000)

boot = program("seabios.boot", "firmware", size=0x10000, doc="SeaBIOS-like boot (endpoint)")


@boot.step("entry")
def _apmc_setup(b, r):
    b.pci_write(lpc.DEVFN, lpc.PMBASE, 4, PMBASE | 1)
    b.pci_write(lpc.DEVFN, lpc.ACPI_CTRL, 1, lpc.ACPI_CTRL_ACPI_EN)
    b.out(PMBASE + lpc.SMI_EN, 4, lpc.SMI_EN_APMC_EN | lpc.SMI_EN_GBL_SMI_EN)
    pmcon = b.pci_read(lpc.DEVFN, lpc.GEN_PMCON_1, 2)
    b.pci_write(lpc.DEVFN, lpc.GEN_PMCON_1, 2, pmcon | lpc.GEN_PMCON_1_SMI_LOCK)
    b.install(BUILD_SMM_INIT_HANDLER, "seabios.smm_init")
    b.install(BUILD_SMM_SMBASE + 0x8000, "seabios.smm")
    return "relocate"


@boot.step("relocate")
def _relocate(b, r):
    b.out(lpc.APM_CNT, 1, 0x00)  # SMI on this CPU: the handler at 0x38000 moves SMBASE
    return "restore"


@boot.step("restore")
def _restore(b, r):
    lo, hi = ZONE_TMP_LOW
    b.erase(lo, hi - lo)  # takes the relocation handler at 0x38000 with it
    b.pci_write(mch.DEVFN, mch.SMRAM, 1, mch.SMRAM_C_BASE_SEG | mch.SMRAM_G_SMRAME)
    return "halt"


@boot.step("halt")
def _halt(b, r):
    b.cli()
    b.hlt()
    return "halt"


smm_init = program("seabios.smm_init", "firmware", size=0x100, doc="SeaBIOS SMBASE relocation handler")


@smm_init.step("entry")
def _smm_init(b, r):
    b.wr(b.smbase + SS_SMBASE, 4, BUILD_SMM_SMBASE)
    return "rsm"


@smm_init.step("rsm")
def _smm_init_rsm(b, r):
    b.rsm()
    return "rsm"


smm = program("seabios.smm", "firmware", size=0x100, doc="SeaBIOS SMI handler (nothing to do)")


@smm.step("entry")
def _smm_rsm(b, r):
    b.rsm()
    return "entry"
