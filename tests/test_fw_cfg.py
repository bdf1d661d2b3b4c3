"""fw_cfg: signature, directory, DMA (observed-qemu-7.2.md)."""

from __future__ import annotations

import struct

from conftest import fwcfg_dma, make_machine

from smm_hotplug.hw import fw_cfg


def read_item(qm, key, n):
    qm.outw(0x510, key)
    return bytes(qm.inb(0x511) for _ in range(n))


def test_signature_id_and_counts():
    qm = make_machine(boot=2, max_cpus=4)
    assert read_item(qm, 0x00, 4) == b"QEMU"
    assert read_item(qm, 0x01, 4) == bytes([3, 0, 0, 0])
    assert read_item(qm, 0x05, 2) == bytes([2, 0])
    assert read_item(qm, 0x0F, 2) == bytes([4, 0])
    assert read_item(qm, 0x03, 8) == struct.pack("<Q", 128 << 20)


def test_directory_lists_qemus_files_sorted_with_keys():
    qm = make_machine()
    raw = read_item(qm, 0x19, 4 + 64 * 15)
    assert struct.unpack(">I", raw[:4])[0] == 15
    names, keys, sizes = [], [], {}
    for i in range(15):
        ent = raw[4 + 64 * i : 68 + 64 * i]
        size, key = struct.unpack(">IH", ent[:6])
        name = ent[8:].rstrip(b"\0").decode()
        names.append(name)
        keys.append(key)
        sizes[name] = size
    assert names == sorted(names)
    assert keys == list(range(0x20, 0x20 + 15))
    assert sizes["etc/smi/features-ok"] == 1
    assert sizes["etc/smi/requested-features"] == 8
    assert sizes["etc/smi/supported-features"] == 8
    assert sizes["etc/e820"] == 40 and sizes["etc/acpi/tables"] == 131072


def test_e820_file():
    qm = make_machine(ram_mb=4096)
    data = read_item(qm, fw_cfg.file_key(qm.cfg, "etc/e820"), 60)
    entries = [struct.unpack("<QQI", data[i : i + 20]) for i in range(0, 60, 20)]
    assert entries == [(0xFD00000000, 0x300000000, 2), (0, 0x80000000, 1), (1 << 32, 0x80000000, 1)]


def test_reads_past_the_end_and_invalid_keys_give_zero(qm):
    assert read_item(qm, 0x00, 6) == b"QEMU\0\0"
    assert read_item(qm, 0x3FFF, 2) == b"\0\0"


def test_dma_signature_and_read(qm):
    assert qm.inl(0x514) == 0x554D4551  # "QEMU" as the CPU sees the big-endian register
    assert qm.inl(0x518) == 0x47464320
    status = fwcfg_dma(qm, (0x00 << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_READ, 6, 0x3000)
    assert status == 0
    assert qm.read_bytes(0x3000, 6) == b"QEMU\0\0"


def test_dma_write_to_read_only_file_is_an_error(qm):
    key = fw_cfg.file_key(qm.cfg, fw_cfg.FILE_SUPPORTED)
    status = fwcfg_dma(qm, (key << 16) | fw_cfg.DMA_CTL_SELECT | fw_cfg.DMA_CTL_WRITE, 8, 0x3000)
    assert status == fw_cfg.DMA_CTL_ERROR


def test_selecting_features_ok_with_no_request_negotiates_nothing(qm):
    qm.outw(0x510, fw_cfg.file_key(qm.cfg, fw_cfg.FILE_FEATURES_OK))
    assert qm.inb(0x511) == 1
    assert qm.m.lpc.smi_features_ok == 1 and qm.m.lpc.smi_negotiated == 0


def test_word_read_of_selector_is_invalid_and_reads_zero(qm):
    qm.outw(0x510, 0)
    assert qm.inw(0x510) == 0
    assert qm.inb(0x510) == ord("Q")  # byte reads at either port read data
