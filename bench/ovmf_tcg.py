"""Reality check of the TCG finding: OVMF's CPU hot-add under real QEMU 7.2 with TCG.

    python bench/ovmf_tcg.py [--boot-seconds 40] [--watch-seconds 30]

Boots Debian's OVMF (package ``ovmf``: OVMF_CODE_4M.secboot.fd, edk2-stable202211, built with
SMM and CpuHotplugSmm) on ``qemu-system-x86_64 -machine q35,smm=on -accel tcg -smp
1,maxcpus=2`` with no disk, lets it reach the boot manager, plugs a CPU over QMP (device_add),
raises the CPU hotplug SMI the way QEMU's AML does — a write of 4 to APM_CNT (0xB2), here from a
qtest session — and then samples both CPUs' registers (``info registers -a``) for a while:
whether each is in SMM, halted, and where it executes; finally the pen's "vacated" byte (the
last byte of the page the CPU 1 runs in).

The model's prediction under ``--accel tcg``: the monarch (CPU 0) stays in SMM, waiting for the
new CPU's AboutToLeaveSmm for ever, while the new CPU sits in the post-SMM pen outside SMM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import click

CODE = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"
VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


class Qmp:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.f = self.sock.makefile("rw")
        self.f.readline()
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args: object) -> dict:
        self.f.write(json.dumps({"execute": name, "arguments": args} if args else {"execute": name}) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "event" not in reply:
                return reply


def cpus(qmp: Qmp) -> list[str]:
    """One line per CPU: SMM, HLT, CS base and RIP."""
    dump = qmp.cmd("human-monitor-command", **{"command-line": "info registers -a"})["return"]
    out = []
    for block in dump.split("CPU#")[1:]:
        rip = re.search(r"[ER]IP=(\w+)", block)
        cs = re.search(r"CS =\w+ (\w+)", block)
        flags = re.search(r"SMM=(\d) HLT=(\d)", block)
        assert rip and cs and flags
        out.append(
            f"cpu{block.split()[0]}: SMM={flags.group(1)} HLT={flags.group(2)} "
            f"CS.base=0x{int(cs.group(1), 16):x} RIP=0x{int(rip.group(1), 16):x}"
        )
    return out


@click.command()
@click.option("--boot-seconds", type=float, default=40, show_default=True, help="Time OVMF gets to boot.")
@click.option(
    "--watch-seconds", type=float, default=30, show_default=True, help="Time to watch after the SMI."
)
def main(boot_seconds: float, watch_seconds: float) -> None:
    if not (shutil.which("qemu-system-x86_64") and os.path.exists(CODE)):
        raise click.ClickException("needs qemu-system-x86 and ovmf installed")
    tmp = tempfile.mkdtemp(prefix="ovmf-tcg-")
    shutil.copy(VARS, f"{tmp}/vars.fd")
    qtest_path, qmp_path = f"{tmp}/qtest.sock", f"{tmp}/qmp.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(qtest_path)
    listener.listen(1)
    # fmt: off
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-machine", "q35,smm=on", "-accel", "tcg", "-smp", "1,maxcpus=2",
        "-m", "512", "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={tmp}/vars.fd",
        "-display", "none", "-nodefaults", "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-qtest", f"unix:{qtest_path}",
    ], stderr=subprocess.DEVNULL)
    # fmt: on
    try:
        conn, _ = listener.accept()
        qtest = conn.makefile("rw")
        while not os.path.exists(qmp_path):
            time.sleep(0.1)
        qmp = Qmp(qmp_path)

        def q(line: str) -> str:
            qtest.write(line + "\n")
            qtest.flush()
            while (answer := qtest.readline().strip()).startswith("IRQ"):
                pass
            return answer

        click.echo(f"QEMU: {qmp.cmd('query-version')['return']['package']}, OVMF: {CODE}")
        time.sleep(boot_seconds)
        click.echo(f"after {boot_seconds:.0f} s of boot: " + "; ".join(cpus(qmp)))
        plug = qmp.cmd(
            "device_add",
            driver="qemu64-x86_64-cpu",
            id="cpu1",
            **{"socket-id": 0, "core-id": 1, "thread-id": 0},
        )
        click.echo(f"device_add cpu1: {plug}; " + "; ".join(cpus(qmp)))
        click.echo(f"qtest outb 0xb2 0x4 (CPU hotplug SMI): {q('outb 0xb2 0x4')}")
        start = time.time()
        while time.time() - start < watch_seconds:
            time.sleep(min(5.0, watch_seconds))
            click.echo(f"+{time.time() - start:4.1f} s: " + "; ".join(cpus(qmp)))
        base = int(re.search(r"CS\.base=0x(\w+)", cpus(qmp)[1]).group(1), 16)  # type: ignore[union-attr]
        click.echo(f"pen page 0x{base:x}: vacated byte 0x{base + 0xFFF:x} = {q(f'readb 0x{base + 0xFFF:x}')}")
    finally:
        qemu.kill()
        qemu.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
