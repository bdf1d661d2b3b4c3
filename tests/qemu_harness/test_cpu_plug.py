"""CPU hotplug in the manner of QEMU's tests/qtest/cpu-plug-test.c and the ACPI CPU hotplug
spec (docs/specs/acpi_cpu_hotplug.rst), rewritten in Python."""

from __future__ import annotations

import pytest

CPUHP = 0x0CD8


@pytest.mark.parametrize(
    "smp",
    [
        "1,maxcpus=2",
        "1,maxcpus=4",
        "1,sockets=2,cores=2,threads=1,maxcpus=4",
        "2,sockets=2,cores=1,threads=2,maxcpus=4",
    ],
)
def test_plug_with_device_add(qtest_init, smp):
    qts = qtest_init(f"-M q35 -smp {smp}")
    cpus = qts.qmp("query-hotpluggable-cpus")["return"]
    hotplugged = 0
    for cpu in cpus:
        if "qom-path" in cpu:
            continue
        assert "props" in cpu
        resp = qts.qmp("device_add", driver=cpu["type"], **cpu["props"])
        assert resp == {"return": {}}
        hotplugged += 1
    assert hotplugged
    after = qts.qmp("query-hotpluggable-cpus")["return"]
    assert all("qom-path" in cpu for cpu in after)
    assert len(qts.qmp("query-cpus-fast")["return"]) == len(after)


def test_modern_interface_reports_a_plug_and_its_apic_id(qtest_init):
    qts = qtest_init("-M q35 -smp 1,maxcpus=4")
    # "Detecting and enabling modern CPU hotplug interface": write 0 to the legacy bitmap
    qts.outl(CPUHP, 0)
    qts.outb(CPUHP + 5, 0)  # command 0: next CPU with event
    assert qts.inl(CPUHP) == 0  # command data 2 is 0 in modern mode
    resp = qts.qmp(
        "device_add", driver="qemu64-x86_64-cpu", id="cpu3", **{"socket-id": 0, "core-id": 3, "thread-id": 0}
    )
    assert resp == {"return": {}}
    qts.outl(CPUHP, 0)
    qts.outb(CPUHP + 5, 0)
    assert qts.inl(CPUHP + 8) == 3  # the selector moved to the CPU with an event
    assert qts.inb(CPUHP + 4) == 0x03  # enabled + insert
    qts.outb(CPUHP + 5, 3)  # command 3: arch id
    assert qts.inl(CPUHP + 8) == 3
    qts.outb(CPUHP + 4, 0x02)  # clear the insert event
    assert qts.inb(CPUHP + 4) == 0x01
    assert qts.qmp("device_del", id="cpu3") == {"return": {}}
    qts.outl(CPUHP, 3)
    assert qts.inb(CPUHP + 4) == 0x05  # enabled + remove
