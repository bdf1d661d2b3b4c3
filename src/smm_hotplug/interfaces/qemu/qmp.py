"""QMP (QEMU Machine Protocol) for the commands harnesses use on CPUs, as QEMU 7.2 answers them.

Commands: qmp_capabilities, query-version, query-status, query-machines, query-hotpluggable-cpus,
query-cpus-fast, device_add / device_del (the CPU type of -cpu), system_reset, quit.
Events: ACPI_DEVICE_OST, DEVICE_DELETED (QEMU 7.2 reports only the CPU's lapic child when a
CPU is ejected), SHUTDOWN.  Messages, error classes, the order in which QEMU checks things and
the layout of every answer follow what Debian's QEMU 7.2 prints (see README, "QEMU notes").
"""

from __future__ import annotations

import re
import time
from typing import Any

from smm_hotplug.hw import lpc
from smm_hotplug.hw.management import Refused
from smm_hotplug.hw.trace import Event
from smm_hotplug.interfaces.qemu import machines, qjson
from smm_hotplug.interfaces.qemu.session import NoMachine, QemuMachine

# Dict literals follow QAPI schema order: QEMU inserts members in that order and its QDicts then
# iterate by hash bucket, newest first within a bucket (see qjson.qdict_order).
QEMU_VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}
CPU_PROPS = ("socket-id", "die-id", "core-id", "thread-id")
CPU_TYPES = {machines.cpu_type(model) for model in machines.CPU_MODELS}
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
INT32_MAX = (1 << 31) - 1


class QmpError(Exception):
    def __init__(self, klass: str, desc: str) -> None:
        super().__init__(desc)
        self.klass = klass
        self.desc = desc


def _generic(desc: str) -> QmpError:
    return QmpError("GenericError", desc)


def greeting() -> dict:
    return {"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}}


def timestamp() -> dict:
    now = time.time()
    return {"seconds": int(now), "microseconds": int((now % 1) * 1_000_000)}


def event(name: str, data: dict) -> dict:
    return {"event": name, "data": data, "timestamp": timestamp()}


def encode(obj: Any) -> bytes:
    """One QMP line: QEMU's JSON, terminated by CR LF."""
    return (qjson.dumps(obj) + "\r\n").encode()


class QmpSession:
    """One QMP connection: capabilities negotiated or not.  ``qm`` is a NoMachine for
    ``-machine none``, which has no CPUs to list or plug."""

    def __init__(self, qm: QemuMachine | NoMachine, devices: DeviceTable | None) -> None:
        self.qm = qm
        self.devices = devices
        self.negotiated = False
        self.quit = False

    def handle(self, obj: Any) -> dict:
        if not isinstance(obj, dict):
            return {"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}}
        try:
            result = self._execute(obj)
        except QmpError as err:
            out: dict = {}
            if "id" in obj:
                out["id"] = obj["id"]
            out["error"] = {"class": err.klass, "desc": err.desc}
            return out
        ok: dict = {"return": result}
        if "id" in obj:
            ok["id"] = obj["id"]
        return ok

    def _execute(self, obj: dict) -> Any:
        if "execute" not in obj and "exec-oob" not in obj:
            raise _generic("QMP input lacks member 'execute'")
        for key in obj:
            if key not in ("execute", "arguments", "id"):
                raise _generic(f"QMP input member '{key}' is unexpected")
        cmd = obj["execute"]
        if not isinstance(cmd, str):
            raise _generic("QMP input member 'execute' must be a string")
        args = obj.get("arguments", {})
        if not isinstance(args, dict):
            raise _generic("QMP input member 'arguments' must be an object")
        if cmd == "qmp_capabilities":
            return self.qmp_capabilities(args)
        if not self.negotiated:
            raise QmpError("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
        handler = COMMANDS.get(cmd)
        if handler is None:
            raise QmpError("CommandNotFound", f"The command {cmd} has not been found")
        return handler(self, args)

    # -- commands ------------------------------------------------------------------------------
    def qmp_capabilities(self, args: dict) -> dict:
        _only(args, ("enable",))
        enable = args.get("enable", [])
        if not isinstance(enable, list) or any(v != "oob" for v in enable):
            bad = next((v for v in enable if v != "oob"), enable) if isinstance(enable, list) else enable
            raise _generic(f"Parameter 'null' does not accept value '{bad}'")
        if self.negotiated:
            raise QmpError("CommandNotFound", "Capabilities negotiation is already complete, command ignored")
        self.negotiated = True
        return {}

    def query_version(self, args: dict) -> dict:
        _only(args)
        return dict(QEMU_VERSION)

    def query_status(self, args: dict) -> dict:
        _only(args)
        return {"running": True, "singlestep": False, "status": "running"}

    def query_machines(self, args: dict) -> list:
        _only(args)
        return [machines.MACHINES[name].query_entry() for name in machines.QUERY_ORDER]

    def query_hotpluggable_cpus(self, args: dict) -> list:
        _only(args)
        if isinstance(self.qm, NoMachine) or self.devices is None:
            raise _generic("The feature 'query-hotpluggable-cpus' is not enabled")
        out = []
        for slot in reversed(range(self.qm.cfg.max_cpus)):
            entry: dict[str, Any] = {
                "type": self.qm.cfg.cpu_type,
                "vcpus-count": 1,
                "props": self.devices.props(slot),
            }
            if self.qm.m.cpus[slot].present:
                entry["qom-path"] = self.devices.paths[slot]
            out.append(entry)
        return out

    def query_cpus_fast(self, args: dict) -> list:
        _only(args)
        if isinstance(self.qm, NoMachine) or self.devices is None:
            return []
        return [
            {
                "cpu-index": slot,
                "qom-path": self.devices.paths[slot],
                "thread-id": self.devices.thread_ids[slot],
                "props": self.devices.props(slot),
                "target": "x86_64",
            }
            for slot in self.devices.created
            if self.qm.m.cpus[slot].present
        ]

    def device_add(self, args: dict) -> dict:
        ident = args.get("id")
        if isinstance(ident, str) and not IDENTIFIER.fullmatch(ident):
            raise _generic("Parameter 'id' expects an identifier")
        if not isinstance(ident, str):
            ident = None  # QEMU ignores an id that is not a string
        if "driver" not in args:
            raise _generic("Parameter 'driver' is missing")
        driver = args["driver"]
        driver_name = qjson.dumps(driver).strip('"') if not isinstance(driver, str) else driver
        if driver == "x86_64-cpu":
            raise _generic("Parameter 'driver' expects a non-abstract device type")
        if not isinstance(driver, str) or driver not in CPU_TYPES:
            raise _generic(f"'{driver_name}' is not a valid device model name")
        if isinstance(self.qm, NoMachine) or self.devices is None:
            if not isinstance(driver, str) or driver not in CPU_TYPES:
                raise _generic(f"'{driver_name}' is not a valid device model name")
            raise _generic(f"Device '{driver}' can not be hotplugged on this machine")
        if ident is not None and ident in self.devices.ids.values():
            raise _generic(f"Duplicate device ID '{ident}'")
        values: dict[str, int] = {}
        # Properties are applied in the order of QEMU's argument QDict: the first bad one wins.
        for key in qjson.qdict_order(list(args)):
            val = args[key]
            if key in ("driver", "id"):
                continue
            if key in CPU_PROPS or key in ("apic-id", "node-id"):
                values[key] = _int32(key, val)
            elif key == "hotplugged":
                raise _generic(f"Property '{driver}.hotplugged' is not writable")
            elif key == "bus":
                raise _generic(f"Device '{driver}' can't go on PCIE bus")
            else:
                raise _generic(f"Property '{driver}.{key}' not found")
        if driver != self.qm.cfg.cpu_type:
            raise _generic(f"Invalid CPU type, expected cpu type: '{self.qm.cfg.cpu_type}'")
        slot = self._slot(values)
        try:
            self.qm.plug(slot)
        except Refused as err:
            raise QmpError(err.klass, str(err)) from None
        self.devices.added(slot, ident)
        return {}

    def _slot(self, values: dict[str, int]) -> int:
        """pc_cpu_pre_plug: the SMI refusal first, then topology, then the slot itself."""
        refusal = lpc.plug_refusal(self.qm.m.lpc, self.qm.cfg.hw.reverted)
        if refusal:
            raise _generic(refusal)
        cfg = self.qm.cfg
        topo = cfg.topology
        if "apic-id" in values:
            apic = values["apic-id"]
            slot = cfg.slot_of_apic(apic)
            if slot is None:
                socket, die, core, thread = topo.ids_of_apic(apic)
                raise _generic(
                    f"Invalid CPU [socket: {socket}, die: {die}, core: {core}, thread: {thread}] with APIC "
                    f"ID {apic}, valid index range 0:{cfg.max_cpus - 1}"
                )
            return slot
        # x86_cpu_pre_plug: each id in turn must be set and in range; die-id may be left out
        # when there is one die per socket.
        if topo.dies == 1:
            values.setdefault("die-id", 0)
        limits = {
            "socket-id": (cfg.max_cpus - 1) // topo.threads // topo.cores // topo.dies,
            "die-id": topo.dies - 1,
            "core-id": topo.cores - 1,
            "thread-id": topo.threads - 1,
        }
        for key in CPU_PROPS:
            val = values.get(key, -1)
            if val < 0:
                raise _generic(f"CPU {key} is not set")
            if val > limits[key]:
                raise _generic(f"Invalid CPU {key}: {val} must be in range 0:{limits[key]}")
        apic = topo.apic_id_of(values["socket-id"], values["die-id"], values["core-id"], values["thread-id"])
        slot = cfg.slot_of_apic(apic)
        if slot is None:  # a socket-id past the last whole socket
            raise _generic(
                f"Invalid CPU [socket: {values['socket-id']}, die: {values['die-id']}, core: "
                f"{values['core-id']}, thread: {values['thread-id']}] with APIC ID {apic}, valid index "
                f"range 0:{cfg.max_cpus - 1}"
            )
        return slot

    def device_del(self, args: dict) -> dict:
        _only(args, ("id",))
        if "id" not in args:
            raise _generic("Parameter 'id' is missing")
        ident = args["id"]
        if not isinstance(ident, str):
            raise _generic("Invalid parameter type for 'id', expected: string")
        slot = self.devices.find(ident) if self.devices is not None else None
        if slot is None or isinstance(self.qm, NoMachine):
            raise QmpError("DeviceNotFound", f"Device '{ident}' not found")
        if slot == 0:
            raise _generic("Boot CPU is unpluggable")
        try:
            self.qm.unplug_request(slot)
        except Refused as err:
            raise QmpError(err.klass, str(err)) from None
        return {}

    def system_reset(self, args: dict) -> dict:
        _only(args)
        self.qm.system_reset()
        self.qm.events.append(Event("qmp", "qmp", "RESET", data=("RESET",)))
        return {}

    def quit_(self, args: dict) -> dict:
        _only(args)
        self.quit = True
        return {}


COMMANDS = {
    "query-version": QmpSession.query_version,
    "query-machines": QmpSession.query_machines,
    "query-status": QmpSession.query_status,
    "query-hotpluggable-cpus": QmpSession.query_hotpluggable_cpus,
    "query-cpus-fast": QmpSession.query_cpus_fast,
    "device_add": QmpSession.device_add,
    "device_del": QmpSession.device_del,
    "system_reset": QmpSession.system_reset,
    "quit": QmpSession.quit_,
}


def _only(args: dict, allowed: tuple[str, ...] = ()) -> None:
    for key in args:
        if key not in allowed:
            raise _generic(f"Parameter '{key}' is unexpected")


def _int32(key: str, val: Any) -> int:
    """QEMU's string-tolerant integer property: 3, "3" and "0x3" are all 3; null is unset."""
    if val is None:
        return -1
    if isinstance(val, bool):
        raise _generic(f"Parameter '{key}' expects integer")
    if isinstance(val, str):
        try:
            val = int(val, 0)
        except ValueError:
            raise _generic(f"Parameter '{key}' expects integer") from None
    if isinstance(val, float) or not isinstance(val, int):
        raise _generic(f"Parameter '{key}' expects integer")
    if not -(1 << 31) <= val <= INT32_MAX:
        raise _generic(f"Parameter '{key}' expects int32_t")
    return val


class DeviceTable:
    """QOM bookkeeping for CPUs: ids, paths and creation order as QEMU has them."""

    def __init__(self, qm: QemuMachine, first_thread_id: int = 1000) -> None:
        self.qm = qm
        self.ids: dict[int, str | None] = {}
        # Boot CPUs: device[0] is the BSP, device[1] is another object, then device[2]...
        self.paths: dict[int, str] = {
            s: f"/machine/unattached/device[{0 if s == 0 else s + 1}]" for s in range(qm.cfg.boot_cpus)
        }
        self.created: list[int] = list(range(qm.cfg.boot_cpus))
        self.next_tid = first_thread_id
        self.thread_ids: dict[int, int] = {}
        for s in self.created:
            self._new_thread(s)
        self.anon = 0

    def _new_thread(self, slot: int) -> None:
        self.thread_ids[slot] = self.next_tid
        self.next_tid += 1

    def props(self, slot: int) -> dict:
        """x86_possible_cpu_arch_ids: die-id only when a socket has more than one die."""
        topo = self.qm.cfg.topology
        socket, die, core, thread = topo.topo_ids(slot)
        if topo.dies > 1:
            return {"socket-id": socket, "die-id": die, "core-id": core, "thread-id": thread}
        return {"socket-id": socket, "core-id": core, "thread-id": thread}

    def added(self, slot: int, ident: str | None) -> None:
        self.ids[slot] = ident
        if ident is not None:
            self.paths[slot] = f"/machine/peripheral/{ident}"
        else:
            self.paths[slot] = f"/machine/peripheral-anon/device[{self.anon}]"
            self.anon += 1
        if slot in self.created:
            self.created.remove(slot)
        self.created.append(slot)
        self._new_thread(slot)

    def removed(self, slot: int) -> str:
        """Forget an ejected CPU; returns its QOM path."""
        self.ids.pop(slot, None)
        if slot in self.created:
            self.created.remove(slot)
        return self.paths.pop(slot, "")

    def find(self, ident: str) -> int | None:
        for slot in self.created:
            if not self.qm.m.cpus[slot].present:
                continue
            if self.ids.get(slot) == ident or self.paths.get(slot) == ident:
                return slot
        return None
