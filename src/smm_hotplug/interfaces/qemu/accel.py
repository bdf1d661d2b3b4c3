"""Choosing the accelerator the way QEMU 7.2 does (softmmu/vl.c: configure_accelerators).

``-accel NAME[,PROP=VALUE...]`` may be given several times: they are tried in order and the
first that initialises is used; an unknown name is reported ("invalid accelerator") and the next
one tried.  Without ``-accel``, ``-machine accel=A:B`` (or ``-enable-kvm``, which is
``accel=kvm``) lists them, and with neither QEMU's default is ``tcg:kvm`` (the binary's name
does not end in "kvm").  Both forms at once are refused.  ``-accel help`` lists what the binary
offers and exits.  Properties are checked as the accelerator objects check them.

The accelerators are Debian's QEMU's, ``tcg`` and ``kvm`` (``-accel help``), whose CPU rules
the model has (hw.apic); plus ``qtest``, which Debian's build lacks ("invalid accelerator
qtest") and this endpoint keeps for test harnesses written for upstream QEMU.  The model's KVM
is a host whose KVM supports SMM with the in-kernel irqchip, so ``kvm`` always initialises here
(where real QEMU depends on the host), and ``kernel-irqchip=off`` (QEMU's userspace APIC with
KVM, other rules) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from smm_hotplug.errors import UsageError
from smm_hotplug.hw.config import ACCEL_KVM, ACCEL_TCG

QTEST = "qtest"
OFFERED = (ACCEL_TCG, ACCEL_KVM)  # what `-accel help` lists, in QEMU's order
DEFAULT = "tcg:kvm"  # configure_accelerators' default when both exist
HELP = "Accelerators supported in QEMU binary:\n" + "".join(f"{a}\n" for a in OFFERED)


class AccelError(UsageError):
    """Refused: QEMU's message (the caller adds the option's location)."""


class AccelHelp(Exception):
    """``-accel help``: print ``HELP`` on stdout and exit 0."""


def _uint(name: str, bits: int) -> Callable[[str], None]:
    def check(value: str) -> None:
        m = re.fullmatch(r"\s*(-?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", value)
        if not m:
            raise AccelError(f"Parameter '{name}' expects uint64")
        number = int(m.group(2), 0)
        if m.group(1):
            number = (1 << 64) - number  # qemu_strtou64 wraps a negative number
        if bits < 64 and number >= 1 << bits:
            raise AccelError(f"Parameter '{name}' expects uint{bits}_t")

    return check


def _int64(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if not re.fullmatch(r"\s*[-+]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", value):
            raise AccelError(f"Parameter '{name}' expects int64")

    return check


def _choice(name: str, values: tuple[str, ...], message: str | None = None) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in values:
            raise AccelError(
                message.format(value) if message else f"Parameter '{name}' does not accept value '{value}'"
            )

    return check


def _bool(name: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in ("on", "off", "yes", "no", "true", "false", "y", "n"):
            raise AccelError(f"Parameter '{name}' expects 'on' or 'off'")

    return check


def _irqchip(value: str) -> None:
    _choice("kernel-irqchip", ("on", "off", "split"))(value)
    if value == "off":
        raise AccelError(
            "this endpoint models KVM with the in-kernel irqchip only (kernel-irqchip=on or split)"
        )


# Properties of each accelerator object (accel/tcg/tcg-all.c, accel/kvm/kvm-all.c,
# target/i386/kvm/kvm.c: *_class_init).
PROPERTIES: dict[str, dict[str, Callable[[str], None]]] = {
    ACCEL_TCG: {
        "thread": _choice("thread", ("single", "multi"), "Invalid 'thread' setting {}"),
        "tb-size": _uint("tb-size", 32),
        "split-wx": _bool("split-wx"),
    },
    ACCEL_KVM: {
        "kernel-irqchip": _irqchip,
        "kvm-shadow-mem": _int64("kvm-shadow-mem"),
        "dirty-ring-size": _uint("dirty-ring-size", 32),
        "notify-vmexit": _choice("notify-vmexit", ("run", "internal-error", "disable")),
        "notify-window": _uint("notify-window", 32),
    },
    QTEST: {},
}


def _value(text: str, p: int) -> tuple[str, int]:
    """QemuOpts' get_opt_value: up to a single ',' (',,' stands for a comma)."""
    out = ""
    while p < len(text):
        if text[p] == ",":
            if text[p + 1 : p + 2] != ",":
                break
            p += 1
        out += text[p]
        p += 1
    return out, p


def parse_option(text: str, warn: list[str]) -> list[tuple[str, str]]:
    """One ``-accel`` argument as (key, value) pairs the way QemuOpts' opts_do_parse reads it
    (the implied key being ``accel``); raises AccelHelp when it names no accelerator or asks for
    help (QEMU exits there)."""
    pairs: list[tuple[str, str]] = []
    p, first = 0, True
    while p < len(text):
        delim = re.search(r"[=,]", text[p:])
        if first and (delim is None or delim.group() != "="):
            key = "accel"
            value, p = _value(text, p)
        else:
            end = p + (delim.start() if delim else len(text) - p)
            key, p = text[p:end], end
            if p < len(text) and text[p] == "=":
                value, p = _value(text, p + 1)
            else:
                value = "on"
                if key:
                    deprecated = f"short-form boolean option '{key}' deprecated\nPlease use {key}=on instead"
                    warn.append(f"-accel {text}: warning: {deprecated}")
        first = False
        if key:
            pairs.append((key, value))
        p += 1  # the ',' after it
    name = dict(pairs).get("accel")
    if name is None or name in ("help", "?"):
        raise AccelHelp()
    return pairs


def configure(
    options: list[tuple[str, list[tuple[str, str]]]], machine_accel: str | None, qtest: bool, warn: list[str]
) -> str:
    """The accelerator chosen from the ``-accel`` options (location text, key/value pairs) or
    ``-machine accel=``; what QEMU reports on the way is appended to ``warn``."""
    failed = False
    if not options:
        options = []
        listed = machine_accel if machine_accel is not None else DEFAULT
        for name in listed.split(":") if listed else ():  # g_strsplit("") is empty
            if name in PROPERTIES:
                options.append(("", [("accel", name)]))
            else:
                failed = True
                warn.append(f"invalid accelerator {name}")
    elif machine_accel is not None:
        raise AccelError('The -accel and "-machine accel=" options are incompatible')
    for where, pairs in options:
        name = dict(pairs)["accel"]
        if name not in PROPERTIES:
            failed = True
            warn.append(f"{where}invalid accelerator {name}")
            continue
        props = PROPERTIES[name]
        for key, value in pairs:
            if key == "accel":
                continue
            if key not in props:
                raise AccelError(f"{where}Property '{name}-accel.{key}' not found")
            try:
                props[key](value)
            except AccelError as err:
                raise AccelError(f"{where}{err}") from None
        if failed and not qtest:
            warn.append(f"falling back to {name}")
        return name
    # Nothing initialised: QEMU exits after the reports above (the last of which ends it here).
    raise AccelError(warn.pop() if failed else "no accelerator found")
