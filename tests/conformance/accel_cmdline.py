"""Differential case: the accelerator options on the command line, accepted and refused as QEMU 7.2 does.

Each case starts real QEMU and smm-hotplug-qemu with the same command line (a q35 machine with
``-qtest stdio``, plus the case's options) and records what happens: the machine comes up and
answers a qtest command, or the process exits — its status and what it printed.  Program names
are masked; the qtest log lines real QEMU writes to stderr, and what it prints when killed, are
left out.

Left out of the comparison, because real QEMU's answer depends on the host and the model stands
for a host whose KVM supports SMM with the in-kernel irqchip: every case that initialises
``kvm`` (it refuses, "System Management Mode not supported by this hypervisor", on a host with
nested KVM without SMM, and exits silently under -qtest where /dev/kvm is missing).  Those,
and ``-accel qtest`` (Debian's build has no qtest accelerator; the endpoint keeps it for
harnesses written for upstream QEMU), are checked against the endpoint alone
(``ENDPOINT_ONLY``).  Property errors of ``kvm`` come before it initialises, so they are compared.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time

QEMU = "qemu-system-x86_64"
BASE = ["-machine", "q35,smm=on", "-smp", "1,maxcpus=2", "-display", "none", "-nodefaults", "-qtest", "stdio"]
UP_AFTER = 1.5  # seconds: a machine still running then is up

CASES: dict[str, list[str]] = {
    "default": [],
    "tcg": ["-accel", "tcg"],
    "tcg-props": ["-accel", "tcg,thread=single,tb-size=64,split-wx=off"],
    "tcg-unknown-prop": ["-accel", "tcg,foo=1"],
    "tcg-bad-thread": ["-accel", "tcg,thread=foo"],
    "tcg-bad-tb-size": ["-accel", "tcg,tb-size=abc"],
    "tcg-tb-size-range": ["-accel", "tcg,tb-size=-1"],
    "tcg-bad-split-wx": ["-accel", "tcg,split-wx=maybe"],
    "tcg-escaped-comma": ["-accel", "tcg,,thread=single"],
    "tcg-then-accel-key": ["-accel", "tcg,accel=foo"],
    "tcg-trailing-comma": ["-accel", "tcg,"],
    "comma-first": ["-accel", ",tcg"],
    "unknown": ["-accel", "foo"],
    "unknown-then-tcg": ["-accel", "foo", "-accel", "tcg"],
    "tcg-then-unknown": ["-accel", "tcg", "-accel", "foo"],
    "uppercase": ["-accel", "TCG"],
    "machine-tcg": ["-machine", "accel=tcg"],
    "machine-list": ["-machine", "accel=foo:tcg"],
    "machine-unknown": ["-machine", "accel=foo"],
    "machine-empty": ["-machine", "accel="],
    "both-forms": ["-accel", "tcg", "-machine", "accel=tcg"],
    "enable-kvm-and-accel": ["-enable-kvm", "-accel", "tcg"],
    "help": ["-accel", "help"],
    "no-name": ["-accel", "thread=single"],
    "help-after-unknown": ["-accel", "foo", "-accel", "help"],
    "kvm-unknown-prop": ["-accel", "kvm,foo=1"],
    "kvm-short-form": ["-accel", "kvm,foo"],
    "kvm-bad-irqchip": ["-accel", "kvm,kernel-irqchip=foo"],
    "kvm-bad-notify": ["-accel", "kvm,notify-vmexit=foo"],
    "kvm-bad-shadow-mem": ["-accel", "kvm,kvm-shadow-mem=abc"],
}

# (arguments, what the endpoint does): cases where real QEMU's answer is the host's (see above).
ENDPOINT_ONLY: dict[str, tuple[list[str], str]] = {
    "kvm": (["-accel", "kvm"], "up"),
    "kvm-split-irqchip": (["-accel", "kvm,kernel-irqchip=split"], "up"),
    "enable-kvm": (["-enable-kvm"], "up"),
    "machine-kvm-then-tcg": (["-machine", "accel=kvm:tcg"], "up"),
    "qtest": (["-accel", "qtest"], "up"),
    "kvm-userspace-irqchip": (["-accel", "kvm,kernel-irqchip=off"], "exit 1"),
}


def command(kind: str, args: list[str]) -> list[str]:
    prog = [QEMU] if kind == "qemu" else [sys.executable, "-m", "smm_hotplug.interfaces.qemu.server"]
    return [*prog, *BASE, *args]


def _clean(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        if line.startswith("[") or "GLib" in line or "terminating on signal" in line:
            continue  # qtest's log, and what QEMU says when it is killed
        out.append(re.sub(r"^(qemu-system-x86_64|server\.py|smm-hotplug-qemu): ", "PROG: ", line))
    return out


def observe(kind: str, args: list[str]) -> dict:
    """What the program does with this command line."""
    proc = subprocess.Popen(
        command(kind, args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + UP_AFTER
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is not None:
            out, err = proc.communicate(timeout=10)
            return {"exit": proc.returncode, "stdout": out.decode(), "stderr": _clean(err.decode())}
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"outb 0x80 0x1\n")
        proc.stdin.flush()
        answer = b""
        end = time.time() + 10
        while b"\n" not in answer and time.time() < end:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                answer += os.read(proc.stdout.fileno(), 4096)
        proc.kill()
        _, err = proc.communicate(timeout=10)
        return {"up": answer.decode().splitlines()[0] if answer else "", "stderr": _clean(err.decode())}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def transcript(kind: str) -> dict[str, dict]:
    return {name: observe(kind, args) for name, args in CASES.items()}
