"""The part of QEMU's command line that qtest/QMP harnesses use, parsed as QEMU parses it.

That includes what QEMU's own libqtest passes (tests/qtest/libqtest.c, qtest_init_without_qmp_handshake):
``-qtest unix:PATH -qtest-log FILE -chardev socket,path=PATH,id=char0 -mon chardev=char0,mode=control
-display none ... -accel qtest``, every q35 machine type and ``-machine none``, and ``-cpu MODEL``.
``-h``/``-help``/``--help`` and ``-version``/``--version`` print and exit 0 as QEMU does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from smm_hotplug.errors import UsageError
from smm_hotplug.hw.config import (
    ACCEL_TCG,
    DEFAULT_RAM_MB,
    MODEL_MAX_CPUS,
    SMP_KEYS,
    HardwareFeatures,
    PlatformConfig,
    Topology,
    platform_config,
    smp_config,
)
from smm_hotplug.interfaces.qemu import accel as A
from smm_hotplug.interfaces.qemu import machines
from smm_hotplug.interfaces.qemu.machines import MachineType

VERSION = "7.2.22"  # the QEMU release whose behaviour is reproduced (Debian 1:7.2+dfsg-7+deb12u18)


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
    port: str = ""  # a service: QEMU hands it to getaddrinfo as written
    server: bool = False
    wait: bool = True
    spec: str = ""  # the option's value as given
    option: str = "-qmp"  # the option it came from (-qmp, -qtest, -chardev)

    def where(self) -> str:
        """The prefix QEMU puts before an error opening this chardev (none for -qtest)."""
        return "" if self.option == "-qtest" else f"{self.option} {self.spec}: "


class Exit(Exception):
    """Print ``text`` on standard output and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class Options:
    machine: MachineType = field(default_factory=lambda: machines.MACHINES[machines.Q35_LATEST])
    cpu_model: str = machines.DEFAULT_CPU_MODEL
    smm: bool = True
    cpus: int = 1
    maxcpus: int | None = None
    topology: Topology | None = None
    ram_mb: int = DEFAULT_RAM_MB
    ext_tseg_mb: int | None = None  # None: the machine type's default
    qtest: Chardev | None = None
    qtest_log: str | None = None
    qmp: list[Chardev] = field(default_factory=list)  # -qmp, and -mon chardev=ID,mode=control
    chardevs: dict[str, Chardev] = field(default_factory=dict)
    accel_qtest: bool = False
    accel: str = ACCEL_TCG  # the accelerator chosen (interfaces.qemu.accel), QEMU's default
    display_none: bool = False
    nodefaults: bool = False

    def platform(self) -> PlatformConfig:
        maxcpus = self.maxcpus if self.maxcpus is not None else self.cpus
        mt = self.machine
        return platform_config(
            self.cpus,
            maxcpus,
            ram_mb=self.ram_mb,
            ext_tseg_mb=self.ext_tseg_mb if self.ext_tseg_mb is not None else mt.ext_tseg_mb,
            smm=self.smm,
            hw=HardwareFeatures(
                smbase_window=mt.smbase_window,
                supported_smi_features=mt.smi_features,
                amd_ht_hole=mt.amd_ht_hole(self.cpu_model),
                accel=ACCEL_TCG if self.accel_qtest else self.accel,
            ),
            topology=self.topology,
            cpu_type=machines.cpu_type(self.cpu_model),
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
    """The legacy chardev syntax of -qtest and -qmp (qemu_chr_parse_compat)."""

    def bad() -> CmdlineError:
        prefix = f"{opt} {value}: " if opt == "-qmp" else ""
        return CmdlineError(f"{prefix}'{value}' is not a valid char driver")

    if value == "stdio":
        return Chardev("stdio", spec=value, option=opt)
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
        return Chardev("unix", path=target, server=server, wait=wait, spec=value, option=opt)
    host, _, port = target.rpartition(":")
    if not port:
        raise bad()
    return Chardev(
        "tcp", host=host or "localhost", port=port, server=server, wait=wait, spec=value, option=opt
    )


CHARDEV_BACKENDS = ("socket", "stdio")


def _chardev_option(text: str, opts: Options) -> None:
    """-chardev BACKEND,id=ID,...: a socket (path=, or host= and port=) or stdio."""
    backend, _, rest = text.partition(",")
    props = _props(rest, "-chardev") if rest else {}
    if backend not in CHARDEV_BACKENDS:
        raise CmdlineError(f"-chardev {text}: '{backend}' is not a valid char driver name")
    ident = props.pop("id", None)
    if ident is None:
        raise CmdlineError(f"-chardev {text}: chardev: no id specified")
    if ident in opts.chardevs:
        raise CmdlineError(f"-chardev {text}: Duplicate ID '{ident}' for chardev")
    server = _onoff(props.pop("server", "off"), "server")
    wait = _onoff(props.pop("wait", "on"), "wait")
    if backend == "stdio":
        chardev = Chardev("stdio", spec=text, option="-chardev")
    elif "path" in props:
        chardev = Chardev(
            "unix", path=props.pop("path"), server=server, wait=wait, spec=text, option="-chardev"
        )
    elif "host" in props or "port" in props:
        host, port = props.pop("host", "localhost"), props.pop("port", "")
        chardev = Chardev("tcp", host=host, port=port, server=server, wait=wait, spec=text, option="-chardev")
    else:
        raise CmdlineError(f"-chardev {text}: Unable to parse FD number ")
    for key in props:
        raise CmdlineError(f"-chardev {text}: Invalid parameter '{key}'")
    opts.chardevs[ident] = chardev


def _mon_option(text: str, opts: Options) -> None:
    """-mon chardev=ID,mode=control: a QMP monitor on a chardev defined with -chardev."""
    props = _props(text, "-mon", implied="chardev")
    if "chardev" not in props:
        raise CmdlineError(f"-mon {text}: Parameter 'chardev' is missing")
    mode = props.get("mode", "readline")
    if mode not in ("readline", "control"):
        raise CmdlineError(f"-mon {text}: Parameter 'mode' does not accept value '{mode}'")
    for key in props:
        if key not in ("chardev", "mode", "pretty"):
            raise CmdlineError(f"-mon {text}: Invalid parameter '{key}'")
    chardev = opts.chardevs.get(props["chardev"])
    if chardev is None:
        raise CmdlineError(f'-mon {text}: chardev "{props["chardev"]}" not found')
    if mode != "control":
        raise CmdlineError(f"-mon {text}: this endpoint offers QMP monitors only (mode=control)")
    opts.qmp.append(chardev)


def _cpu_option(text: str, opts: Options) -> None:
    model, _, features = text.partition(",")
    if model not in machines.CPU_MODELS:
        raise CmdlineError(f"unable to find CPU model '{model}'")
    if features:
        raise CmdlineError(f"-cpu {text}: this endpoint models no CPU features (give the model alone)")
    opts.cpu_model = model


def _machine_option(text: str, opts: Options) -> str | None:
    """Apply ``-machine TEXT``; returns the accelerator it names with ``accel=``, if any."""
    chosen: str | None = None
    for key, val in _props(text, "-machine", implied="type").items():
        if key == "type":
            if val == "help":
                raise Exit(machine_help())
            mt = machines.lookup(val)
            if mt is None:
                raise CmdlineError(
                    "unsupported machine type"
                    if not re.fullmatch(r"pc|pc-i440fx-[\d.]+|isapc|microvm", val)
                    else f"-machine {val}: this endpoint models the q35 machine only"
                )
            opts.machine = mt
        elif key == "smm":
            opts.smm = True if val == "auto" else _onoff(val, "smm")
        elif key == "accel":
            chosen = val
        else:
            raise CmdlineError(f"Property '{opts.machine.name}-machine.{key}' not found")
    return chosen


def machine_help() -> str:
    lines = ["Supported machines are:"]
    for name in sorted(machines.MACHINES, key=lambda n: machines.MACHINES[n].version, reverse=True):
        if name == machines.Q35_LATEST:
            lines.append(f"{machines.Q35_ALIAS:<20} q35 chipset with ICH9 (alias of {name})")
        what = "empty machine" if name == machines.NONE else "q35 chipset with ICH9"
        lines.append(f"{name:<20} {what}")
    return "\n".join(lines) + "\n"


def version_text() -> str:
    return (
        f"QEMU emulator version {VERSION} (smm-hotplug-qemu, a model of Debian's QEMU {VERSION})\n"
        "smm-hotplug: an executable model of SMM-safe CPU hotplug on q35\n"
    )


def usage_text(prog: str) -> str:
    return version_text() + (
        f"usage: {prog} [options]\n\n"
        "Options understood (as QEMU 7.2 reads them):\n"
        "-machine|-M TYPE[,smm=on|off|auto]\n"
        "                     q35 (alias of pc-q35-7.2), pc-q35-X.Y, none; 'help' lists them\n"
        "-cpu MODEL           x86 CPU model of hot-added and boot CPUs (default qemu64)\n"
        "-smp [cpus=]N[,maxcpus=M][,sockets=S][,dies=D][,cores=C][,threads=T]\n"
        "-m [size=]SIZE       RAM size (whole MiB; suffixes k/M/G/T)\n"
        "-global mch.extended-tseg-mbytes=N\n"
        "-qtest CHARDEV       qtest line protocol: stdio, unix:PATH[,server=on], tcp:HOST:PORT[,server=on]\n"
        "-qtest-log FILE      log the qtest traffic ('none': no log; default: standard error)\n"
        "-qmp CHARDEV         QMP monitor: unix:PATH[,server=on,wait=off], tcp:HOST:PORT[,...], stdio\n"
        "-chardev socket,id=ID,path=PATH|host=H,port=P[,server=on,wait=off] | stdio,id=ID\n"
        "-mon chardev=ID,mode=control   QMP monitor on a -chardev\n"
        "-accel kvm|tcg|qtest[,...]  the accelerator (default tcg; -enable-kvm, -machine accel=);\n"
        "                     qtest: nothing runs on the CPUs; otherwise a SeaBIOS-like firmware\n"
        "                     runs first, as on Debian's QEMU; 'help' lists them\n"
        "-display none, -nodefaults     accepted\n"
        "-h, -help, --help    this text; -version, --version: the version\n"
    )


def parse(argv: list[str], warn: list[str] | None = None, prog: str = "smm-hotplug-qemu") -> Options:
    """Parse the command line; CmdlineError carries QEMU's wording for what it rejects, Exit the
    text of -h or -version.  Warnings QEMU would print (and carry on after) go to ``warn``."""
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
        if name in ("-h", "-help"):
            raise Exit(usage_text(prog))
        if name == "-version":
            raise Exit(version_text())
        if name in ("-machine", "-M"):
            chosen = _machine_option(value(name), opts)
            if chosen is not None:
                machine_accel = chosen
        elif name == "-cpu":
            _cpu_option(value(name), opts)
        elif name == "-smp":
            text = value(name)
            for key, val in _props(text, name, implied="cpus").items():
                if key not in SMP_KEYS:
                    raise CmdlineError(f"Parameter 'smp.{key}' is unexpected")
                if not re.fullmatch(r"-?\d+", val):
                    raise CmdlineError(f"Parameter 'smp.{key}' expects integer")
                smp[key] = val
        elif name == "-m":
            opts.ram_mb = _ram_mb(value(name))
        elif name == "-qtest":
            opts.qtest = _chardev(value(name), name)
        elif name == "-qtest-log":
            opts.qtest_log = value(name)
        elif name == "-qmp":
            opts.qmp.append(_chardev(value(name), name))
        elif name == "-chardev":
            _chardev_option(value(name), opts)
        elif name == "-mon":
            _mon_option(value(name), opts)
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
    """QEMU 7.2's -smp completion and checks (hw.config.smp_config) for the chosen machine type:
    its CPU limit, and sockets preferred over cores on types before 6.2 (smp_props.prefer_sockets)."""
    mt = opts.machine
    try:
        cpus, maxcpus, topology = smp_config(
            {k: int(v) for k, v in smp.items()},
            warn,
            machine=mt.name,
            cpu_max=mt.cpu_max,
            prefer_sockets=mt.prefer_sockets,
        )
    except UsageError as err:
        raise CmdlineError(str(err)) from None
    if maxcpus > MODEL_MAX_CPUS:
        raise CmdlineError(f"this endpoint models at most {MODEL_MAX_CPUS} possible CPUs (got {maxcpus})")
    opts.cpus, opts.maxcpus, opts.topology = cpus, maxcpus, topology
