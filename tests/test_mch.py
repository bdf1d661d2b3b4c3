"""q35 MCH registers against ../shared/reference (observed-qemu-7.2.md, qemu-device-semantics.md)."""

from __future__ import annotations

import pytest
from conftest import MCH, make_machine


def rd(qm, reg):
    return qm.pci_read(MCH, reg, 1)


def wr(qm, reg, value):
    qm.pci_write(MCH, reg, 1, value)


def test_reset_values(qm):
    # After reset 0x9d is 0x02; real QEMU shows 0x0a once SeaBIOS has set G_SMRAME.
    assert rd(qm, 0x9C) == 0x00
    assert rd(qm, 0x9D) == 0x02
    assert rd(qm, 0x9E) == 0x38
    assert qm.pci_read(MCH, 0x00, 4) == 0x29C08086


def test_smbase_window_query_then_lock_and_lock_is_sticky(qm):
    wr(qm, 0x9C, 0xFF)
    assert rd(qm, 0x9C) == 0x01
    wr(qm, 0x9C, 0x02)
    assert rd(qm, 0x9C) == 0x02
    for value in (0x00, 0x01, 0xFF, 0x03):
        wr(qm, 0x9C, value)
        assert rd(qm, 0x9C) == 0x02


@pytest.mark.parametrize("value", [0x02, 0x01, 0x03, 0x80, 0xFE])
def test_smbase_window_writes_before_query_are_discarded(qm, value):
    wr(qm, 0x9C, value)
    assert rd(qm, 0x9C) == 0x00


def test_after_query_a_write_without_lock_bit_keeps_present(qm):
    wr(qm, 0x9C, 0xFF)
    wr(qm, 0x9C, 0x01)
    assert rd(qm, 0x9C) == 0x01


def test_window_is_ram_until_locked_then_a_black_hole_with_exact_edges(qm):
    qm.write(0x38000, 4, 0xDEADBEEF)
    assert qm.read(0x38000, 4) == 0xDEADBEEF
    qm.write(0x2FFFF, 1, 0x5A)
    qm.write(0x50000, 1, 0xA5)
    wr(qm, 0x9C, 0xFF)
    wr(qm, 0x9C, 0x02)
    assert qm.read(0x38000, 4) == 0xFFFFFFFF
    assert qm.read(0x30000, 8) == (1 << 64) - 1
    assert qm.read(0x4FFFF, 1) == 0xFF
    qm.write(0x38000, 4, 0x12345678)  # dropped
    assert qm.read(0x2FFFF, 1) == 0x5A
    assert qm.read(0x50000, 1) == 0xA5
    # straddling the lower edge: one RAM byte, three black-hole bytes
    assert qm.read(0x2FFFF, 4) == 0xFFFFFF5A


def test_machine_without_the_feature_never_locks():
    """Before pc-q35-5.0 (mch.smbase-smram=off) 0x9c is an ordinary writable byte (mch_reset sets
    its wmask to 0xff; QEMU's q35-test /q35/smram/legacy_smbase checks the same)."""
    qm = make_machine(smbase_window=False)
    wr(qm, 0x9C, 0xFF)
    assert rd(qm, 0x9C) == 0xFF
    wr(qm, 0x9C, 0x02)
    assert rd(qm, 0x9C) == 0x02
    qm.write(0x38000, 4, 0x11223344)
    assert qm.read(0x38000, 4) == 0x11223344


def test_smram_d_open_and_d_lck(qm):
    wr(qm, 0x9D, 0x40)
    assert rd(qm, 0x9D) == 0x42
    wr(qm, 0x9D, 0x1A)
    assert rd(qm, 0x9D) == 0x1A
    wr(qm, 0x9D, 0x4A)  # D_OPEN is refused once locked
    assert rd(qm, 0x9D) == 0x1A
    wr(qm, 0x9E, 0x01)  # ESMRAMC is read-only once locked
    assert rd(qm, 0x9E) == 0x38
    wr(qm, 0x9D, 0x3A)  # only D_CLS stays writable
    assert rd(qm, 0x9D) == 0x3A


def test_tseg_black_hole_with_256m():
    qm = make_machine(ram_mb=256)
    qm.write(0x0FF00000, 4, 0xCAFEF00D)
    qm.write(0x0FEFFFFC, 4, 0x01020304)
    wr(qm, 0x9E, 0x01)
    assert rd(qm, 0x9E) == 0x39
    wr(qm, 0x9D, 0x0A)
    assert rd(qm, 0x9D) == 0x0A
    assert qm.read(0x0FF00000, 4) == 0xFFFFFFFF
    qm.write(0x0FF00000, 4, 0)
    assert qm.read(0x0FEFFFFC, 4) == 0x01020304
    # D_OPEN does not open TSEG
    wr(qm, 0x9D, 0x4A)
    assert qm.read(0x0FF00000, 4) == 0xFFFFFFFF
    # disabling TSEG shows the RAM again, untouched by the dropped write
    wr(qm, 0x9E, 0x00)
    assert qm.read(0x0FF00000, 4) == 0xCAFEF00D


def test_extended_tseg_query(qm):
    assert qm.pci_read(MCH, 0x50, 2) == 16
    qm.pci_write(MCH, 0x50, 2, 0xFFFF)
    assert qm.pci_read(MCH, 0x50, 2) == 16


def test_no_device_reads_all_ones(qm):
    assert qm.pci_read(5, 0, 4) == 0xFFFFFFFF


def test_config_address_low_bits_are_ored_into_the_register(qm):
    """pci_host_config_write/read: ``config_reg | (port & 3)`` — an address written with its low
    bits set (as QEMU's q35-test does for 0x9d and 0x9e) still reaches that register."""
    qm.outl(0xCF8, 0x80000000 | 0x9E)
    qm.outb(0xCFC, 0x38 | 0x01)  # ESMRAMC.T_EN
    assert rd(qm, 0x9E) == 0x39 and rd(qm, 0x9C) == 0x00
    qm.outl(0xCF8, 0x80000000 | 0x9D)
    assert qm.inb(0xCFC) == 0x02 and qm.inb(0xCFD) == 0x02  # SMRAM (0x9d | 1 is 0x9d), not 0x9c
    assert qm.inb(0xCFE) == 0x00  # 0x9d | 2 = 0x9f
