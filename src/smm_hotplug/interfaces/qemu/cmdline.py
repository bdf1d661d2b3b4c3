"""The part of QEMU's command line that qtest/QMP harnesses use, parsed as QEMU parses it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smm_hotplug.errors import UsageError
from smm_hotplug.hw.config import (
    ACCEL_TCG,
    DEFAULT_EXT_TSEG_MB,
    DEFAULT_RAM_MB,
    HardwareFeatures,
    PlatformConfig,
    platform_config,
)
from smm_hotplug.interfaces.qemu import accel as A

MAX_CPUS = 288  # q35's max_cpus in QEMU 7.2


class CmdlineError(UsageError):
    """A QEMU-style error: ``prog: -opt: message``, exit status 1."""

    def line(self) -> str:
        """The message on one line (arguments may carry control characters)."""
        return str(self).encode("unicode_escape").decode("ascii")


class AccelHelpRequested(CmdlineError):
    """``-accel help``: not an error — QEMU lists the accelerators on stdout and exits 0."""


@dataclass(frozen=True)
class Chardev:
    kind: str  # "stdio" | "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0
    server: bool = False
    wait: bool = True


@dataclass
class Options:
    machine: str = "q35"
    smm: bool = True
    cpus: int = 1
    maxcpus: int | None = None
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    ram_mb: int = DEFAULT_RAM_MB
    ext_tseg_mb: int = DEFAULT_EXT_TSEG_MB
    qtest: Chardev | None = None
    qmp: list[Chardev] = field(default_factory=list)
    accel_qtest: bool = False
    accel: str = ACCEL_TCG  # the accelerator chosen (interfaces.qemu.accel), QEMU's default
    display_none: bool = False
    nodefaults: bool = False

    def platform(self) -> PlatformConfig:
        maxcpus = self.maxcpus if self.maxcpus is not None else self.cpus
        return platform_config(
            self.cpus,
            maxcpus,
            ram_mb=self.ram_mb,
            ext_tseg_mb=self.ext_tseg_mb,
            smm=self.smm,
            hw=HardwareFeatures(accel=ACCEL_TCG if self.accel_qtest else self.accel),
            sockets=self.sockets,
            cores=self.cores,
            threads=self.threads,
        )


def _props(text: str, opt: str, implied: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, part in enumerate(text.split(",")):
        if "=" not in part:
            if i == 0 and implied is not None:
                out[implied] = part
                continue
            raise CmdlineError(f"{opt} {text}: Invalid parameter '{part}'")
        key, value = part.split("=", 1)
        out[key] = value
    return out


def _onoff(value: str, name: str) -> bool:
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise CmdlineError(f"Parameter '{name}' does not accept value '{value}'")


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([bBkKmMgGtT]?)")
_UNITS = {"": 1 << 20, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _ram_mb(value: str) -> int:
    text = value[5:] if value.startswith("size=") else value
    match = _SIZE.fullmatch(text)
    if not match:
        raise CmdlineError(f"-m {value}: Parameter 'size' expects a non-negative number below 2^64")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size == 0:
        return DEFAULT_RAM_MB  # QEMU: -m 0 means the default
    if size % (1 << 20):
        raise CmdlineError(f"-m {value}: this model needs the RAM size in whole MiB")
    return size >> 20


def _chardev(value: str, opt: str) -> Chardev:
    def bad() -> CmdlineError:
        prefix = f"{opt} {value}: " if opt == "-qmp" else ""
        return CmdlineError(f"{prefix}'{value}' is not a valid char driver")

    if value == "stdio":
        return Chardev("stdio")
    kind, _, rest = value.partition(":")
    if kind not in ("unix", "tcp") or not rest:
        raise bad()
    target, *extra = rest.split(",")
    props: dict[str, str] = {}
    for part in extra:
        key, _, val = part.partition("=")
        props[key] = val or "on"
    server = _onoff(props.get("server", "off"), "server")
    wait = _onoff(props.get("wait", "on"), "wait")
    if kind == "unix":
        return Chardev("unix", path=target, server=server, wait=wait)
    host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise bad()
    return Chardev("tcp", host=host or "localhost", port=int(port), server=server, wait=wait)


def parse(argv: list[str], warn: list[str] | None = None) -> Options:
    """Parse the command line; CmdlineError carries QEMU's wording for what it rejects.
    Warnings QEMU would print (and carry on after) are appended to ``warn``."""
    opts = Options()
    args = list(argv)
    smp: dict[str, str] = {}
    accels: list[tuple[str, list[tuple[str, str]]]] = []  # -accel options, in order
    machine_accel: str | None = None  # -machine accel= / -enable-kvm
    warn = warn if warn is not None else []
    i = 0

    def value(opt: str) -> str:
        nonlocal i
        if i + 1 >= len(args):
            raise CmdlineError(f"{opt}: requires an argument")
        i += 1
        return args[i]

    while i < len(args):
        opt = args[i]
        if not opt.startswith("-") or opt == "-":
            raise CmdlineError(f"{opt}: Could not open '{opt}': No such file or directory")
        name = "-" + opt.lstrip("-")
        if name in ("-machine", "-M"):
            text = value(name)
            for key, val in _props(text, name, implied="type").items():
                if key == "type":
                    if val not in ("q35", "pc-q35-7.2"):
                        raise CmdlineError(
                            "unsupported machine type"
                            if val not in ("pc", "pc-i440fx-7.2")
                            else f"-machine {val}: this endpoint models the q35 machine only"
                        )
                    opts.machine = val
                elif key == "smm":
                    opts.smm = True if val == "auto" else _onoff(val, "smm")
                elif key == "accel":
                    machine_accel = val
                else:
                    raise CmdlineError(f"Property 'pc-q35-7.2-machine.{key}' not found")
        elif name == "-smp":
            text = value(name)
            for key, val in _props(text, name, implied="cpus").items():
                if key not in ("cpus", "maxcpus", "sockets", "dies", "cores", "threads"):
                    raise CmdlineError(f"Parameter 'smp.{key}' is unexpected")
                if not re.fullmatch(r"-?\d+", val):
                    raise CmdlineError(f"Parameter 'smp.{key}' expects integer")
                smp[key] = val
        elif name == "-m":
            opts.ram_mb = _ram_mb(value(name))
        elif name == "-qtest":
            opts.qtest = _chardev(value(name), name)
        elif name == "-qmp":
            opts.qmp.append(_chardev(value(name), name))
        elif name == "-accel":
            text = value(name)
            try:
                accels.append((f"-accel {text}: ", A.parse_option(text, warn)))
            except A.AccelHelp:
                raise AccelHelpRequested(f"-accel {text}: lists the accelerators") from None
        elif name == "-enable-kvm":
            machine_accel = "kvm"
        elif name == "-display":
            text = value(name)
            kind = text.split(",")[0]
            if kind not in ("none", "gtk", "sdl", "vnc", "curses", "egl-headless", "spice-app", "dbus"):
                raise CmdlineError(f"-display {text}: Parameter 'type' does not accept value '{kind}'")
            if kind != "none":
                raise CmdlineError(f"-display {text}: this endpoint has no display (use -display none)")
            opts.display_none = True
        elif name == "-nodefaults":
            opts.nodefaults = True
        elif name == "-global":
            _global(value(name), opts)
        else:
            raise CmdlineError(f"{opt}: invalid option")
        i += 1
    _topology(opts, smp, warn)
    try:
        opts.accel = A.configure(accels, machine_accel, opts.qtest is not None, warn)
    except A.AccelError as err:
        raise CmdlineError(str(err)) from None
    opts.accel_qtest = opts.accel == A.QTEST
    return opts


def _global(spec: str, opts: Options) -> None:
    match = re.fullmatch(r"([^.=]+)\.([^=]+)=(.*)", spec)
    if not match:
        raise CmdlineError(f"-global {spec}: Invalid format")
    driver, prop, val = match.groups()
    if (driver, prop) != ("mch", "extended-tseg-mbytes"):
        raise CmdlineError(f"-global {spec}: this endpoint knows only mch.extended-tseg-mbytes")
    if not re.fullmatch(r"\d+", val):
        raise CmdlineError(f"can't apply global {spec}: Parameter 'extended-tseg-mbytes' expects uint64")
    mbytes = int(val)
    if mbytes > 0xFFF:
        raise CmdlineError(f"invalid extended-tseg-mbytes value: {mbytes}")
    opts.ext_tseg_mb = mbytes


def _topology(opts: Options, smp: dict[str, str], warn: list[str]) -> None:
    """QEMU 7.2's smp_parse for pc-q35-7.2 (cores preferred over sockets)."""
    get = {k: int(v) for k, v in smp.items()}
    if any(v == 0 for k, v in get.items()):
        warn.append(
            "warning: Deprecated CPU topology (considered invalid): "
            "CPU topology parameters must be greater than zero"
        )
        get = {k: v for k, v in get.items() if v != 0}
    if any(v < 0 for v in get.values()):
        bad = get.get("cpus", get.get("maxcpus", -1))
        raise CmdlineError(
            f"Invalid SMP CPUs {bad}. The max CPUs supported by machine 'pc-q35-7.2' is {MAX_CPUS}"
        )
    if get.get("dies", 1) != 1:
        raise CmdlineError("dies not supported by this machine's CPU topology")
    cpus, maxcpus = get.get("cpus", 0), get.get("maxcpus", 0)
    maxcpus = maxcpus or cpus
    sockets, threads = get.get("sockets", 0), get.get("threads", 1)
    cores = get.get("cores", 0)
    if not maxcpus:
        maxcpus = (sockets or 1) * (cores or 1) * threads
    if not sockets:
        sockets = 1 if not cores else max(1, maxcpus // (cores * threads))
    if not cores:
        cores = max(1, maxcpus // (sockets * threads))
    if not get.get("maxcpus"):
        maxcpus = sockets * cores * threads if (get.get("sockets") and get.get("cores")) else maxcpus
    cpus = cpus or maxcpus
    product = sockets * cores * threads
    if product != maxcpus:
        raise CmdlineError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"sockets ({sockets}) * dies (1) * cores ({cores}) * threads ({threads}) != maxcpus ({maxcpus})"
        )
    if maxcpus < cpus:
        raise CmdlineError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"sockets ({sockets}) * dies (1) * cores ({cores}) * threads ({threads}) == maxcpus ({maxcpus}) "
            f"< smp_cpus ({cpus})"
        )
    if maxcpus > MAX_CPUS:
        raise CmdlineError(
            f"Invalid SMP CPUs {maxcpus}. The max CPUs supported by machine 'pc-q35-7.2' is {MAX_CPUS}"
        )
    if maxcpus > 64:
        raise CmdlineError(f"this endpoint models at most 64 possible CPUs (got {maxcpus})")
    opts.cpus, opts.maxcpus, opts.sockets, opts.cores, opts.threads = cpus, maxcpus, sockets, cores, threads
