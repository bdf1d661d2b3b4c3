"""q35 SMRAM tests in the manner of QEMU's tests/qtest/q35-test.c, rewritten in Python."""

from __future__ import annotations

import pytest

MCH = 0  # 00:00.0
F_SMBASE = 0x9C
SMRAM = 0x9D
ESMRAMC = 0x9E
SMBASE = 0x30000
SMRAM_TEST_PATTERN = 0x32
TSEG_TEST_RAM_MB = 128

# ESMRAMC bits
T_EN = 0x01
TSEG_SZ_MASK = 0x06
# SMRAM bits
D_OPEN, D_CLS, D_LCK, G_SMRAME = 0x40, 0x20, 0x10, 0x08


def test_smram_smbase_lock(qtest_init):
    qts = qtest_init("-M q35")
    # SMRAM at SMBASE is not enabled by default
    assert qts.pci_config_readb(MCH, F_SMBASE) == 0
    qts.writeb(SMBASE, SMRAM_TEST_PATTERN)
    assert qts.readb(SMBASE) == SMRAM_TEST_PATTERN
    # junk written to 0x9c before the negotiation is ignored
    for i in range(0xFF):
        qts.pci_config_writeb(MCH, F_SMBASE, i)
        assert qts.pci_config_readb(MCH, F_SMBASE) == 0
    # enable, then lock SMRAM at SMBASE
    qts.pci_config_writeb(MCH, F_SMBASE, 0xFF)
    assert qts.pci_config_readb(MCH, F_SMBASE) == 0x01
    qts.pci_config_writeb(MCH, F_SMBASE, 0x02)
    assert qts.pci_config_readb(MCH, F_SMBASE) == 0x02
    # locked: invisible from outside SMM, and it cannot be unlocked
    assert qts.readb(SMBASE) == 0xFF
    for i in range(0x100):
        qts.pci_config_writeb(MCH, F_SMBASE, i)
        assert qts.pci_config_readb(MCH, F_SMBASE) == 0x02
    response = qts.qmp("system_reset")
    assert "error" not in response
    # the RAM at SMBASE is back after the reset, and so is the unlocked register
    assert qts.readb(SMBASE) == SMRAM_TEST_PATTERN
    assert qts.pci_config_readb(MCH, F_SMBASE) == 0


@pytest.mark.parametrize(
    "ext_tseg_mbytes,esmramc_tseg_sz,expected_tseg_mbytes",
    [
        (0, 0x0, 1),  # 1 MiB
        (0, 0x2, 2),  # 2 MiB
        (0, 0x4, 8),  # 8 MiB
        (16, 0x6, 16),  # extended
        (64, 0x6, 64),
    ],
)
def test_tseg_size(qtest_init, ext_tseg_mbytes, esmramc_tseg_sz, expected_tseg_mbytes):
    qts = qtest_init(f"-M q35 -m {TSEG_TEST_RAM_MB}M -global mch.extended-tseg-mbytes={ext_tseg_mbytes}")
    esmramc = qts.pci_config_readb(MCH, ESMRAMC)
    esmramc = (esmramc & ~TSEG_SZ_MASK) | esmramc_tseg_sz | T_EN
    qts.pci_config_writeb(MCH, ESMRAMC, esmramc)
    smram = qts.pci_config_readb(MCH, SMRAM)
    smram = (smram & ~(D_OPEN | D_LCK)) | D_CLS | G_SMRAME
    qts.pci_config_writeb(MCH, SMRAM, smram)
    qts.pci_config_writeb(MCH, SMRAM, smram | D_LCK)
    # the byte right below TSEG is RAM; the first byte of TSEG reads 0xff and ignores writes
    ram_offs = (TSEG_TEST_RAM_MB - expected_tseg_mbytes) * 1024 * 1024 - 1
    assert qts.readb(ram_offs) == 0
    qts.writeb(ram_offs, 1)
    assert qts.readb(ram_offs) == 1
    ram_offs += 1
    assert qts.readb(ram_offs) == 0xFF
    qts.writeb(ram_offs, 1)
    assert qts.readb(ram_offs) == 0xFF
