"""smm-hotplug-qemu: the model behind QEMU's command line, qtest and QMP.

One process, one machine state, several channels multiplexed with ``selectors``: the qtest
channel (stdio, or a unix socket QEMU-style: connect as a client unless ``server=on``) and any
number of QMP servers (unix or tcp).  Every access goes through the same model as the
simulator and the checker; QMP events and IRQ lines are pushed as the model reports them.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
from dataclasses import dataclass, field

from smm_hotplug.hw.trace import Event
from smm_hotplug.interfaces.qemu import qjson
from smm_hotplug.interfaces.qemu import qmp as Q
from smm_hotplug.interfaces.qemu.accel import HELP
from smm_hotplug.interfaces.qemu.cmdline import AccelHelpRequested, Chardev, CmdlineError, Options, parse
from smm_hotplug.interfaces.qemu.qtest import QtestSession
from smm_hotplug.interfaces.qemu.session import QemuMachine

READ = selectors.EVENT_READ


@dataclass
class Conn:
    kind: str  # "qtest" | "qmp"
    rfile: int
    wsock: socket.socket | None  # None: write to stdout
    buf: bytes = b""
    session: Q.QmpSession | None = None
    stream: qjson.Streamer | None = None


@dataclass
class Endpoint:
    opts: Options
    qm: QemuMachine = field(init=False)
    devices: Q.DeviceTable = field(init=False)
    qtest: QtestSession = field(init=False)
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    qmp_clients: list[Conn] = field(default_factory=list)
    qtest_conn: Conn | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.qm = QemuMachine(self.opts.platform(), firmware=not self.opts.accel_qtest)
        self.devices = Q.DeviceTable(self.qm)
        self.qtest = QtestSession(self.qm, accel_qtest=self.opts.accel_qtest)

    # -- setup --------------------------------------------------------------------------------
    def open(self) -> None:
        for ch in self.opts.qmp:
            if not ch.server:
                raise CmdlineError("-qmp: this endpoint serves QMP only as a server (add server=on)")
            lsock = _listen(ch)
            self.sel.register(lsock, READ, ("qmp-listen", lsock))
        if self.opts.qtest is not None:
            ch = self.opts.qtest
            if ch.kind == "stdio":
                conn = Conn("qtest", sys.stdin.fileno(), None)
            elif ch.server:
                lsock = _listen(ch)
                client, _ = lsock.accept()
                conn = Conn("qtest", client.fileno(), client)
            else:
                conn = Conn("qtest", -1, _connect(ch))
                conn.rfile = conn.wsock.fileno()  # type: ignore[union-attr]
            self.qtest_conn = conn
            self.sel.register(conn.rfile, READ, ("qtest", conn))

    # -- loop -------------------------------------------------------------------------------------
    def serve(self) -> None:
        while not self.done:
            for key, _ in self.sel.select(timeout=0.5):
                kind, obj = key.data
                if kind == "qmp-listen":
                    self._accept(obj)
                elif kind == "qtest":
                    self._on_qtest(obj)
                elif kind == "qmp":
                    self._on_qmp(obj)
                if self.done:
                    break

    def _accept(self, lsock: socket.socket) -> None:
        client, _ = lsock.accept()
        conn = Conn(
            "qmp",
            client.fileno(),
            client,
            session=Q.QmpSession(self.qm, self.devices),
            stream=qjson.Streamer(),
        )
        self.qmp_clients.append(conn)
        self.sel.register(client, READ, ("qmp", conn))
        self._send(conn, Q.encode(Q.greeting()))

    def _on_qtest(self, conn: Conn) -> None:
        data = os.read(conn.rfile, 65536)
        if not data:
            # Like QEMU: the qtest channel closing does not stop the machine while QMP serves.
            self.sel.unregister(conn.rfile)
            self.qtest_conn = None
            if not self.opts.qmp:
                self.done = True
            return
        conn.buf += data
        while b"\n" in conn.buf:
            raw, conn.buf = conn.buf.split(b"\n", 1)
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            for answer in self.qtest.handle(line):
                self._send(conn, (answer + "\n").encode())
            self._flush_events()
            if self.qtest_conn is None:
                return

    def _on_qmp(self, conn: Conn) -> None:
        assert conn.wsock is not None and conn.session is not None and conn.stream is not None
        try:
            data = conn.wsock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        for item in conn.stream.feed(data.decode("utf-8", errors="replace")):
            if isinstance(item, qjson.JsonError):
                reply: dict = {"error": {"class": "GenericError", "desc": str(item)}}
            else:
                reply = conn.session.handle(item)
            if conn.session.quit:
                self.qm.events.append(Event("qmp", "qmp", "SHUTDOWN", data=("SHUTDOWN",)))
            # Events a command causes reach the clients before its return, as in QEMU.
            self._flush_events()
            self._send(conn, Q.encode(reply))
            if conn.session.quit:
                self.done = True
                return

    # -- events -----------------------------------------------------------------------------------
    def _flush_events(self) -> None:
        for line in self.qtest.poll_irqs():
            if self.qtest_conn is not None:
                self._send(self.qtest_conn, (line + "\n").encode())
        for ev in self.qm.take_events():
            msg = self._qmp_event(ev.data)
            if msg is not None:
                for conn in self.qmp_clients:
                    if conn.session is not None and conn.session.negotiated:
                        self._send(conn, Q.encode(msg))

    def _qmp_event(self, data: tuple) -> dict | None:
        if not data:
            return None
        if data[0] == "DEVICE_DELETED":
            # QEMU 7.2 reports only the CPU's lapic child as deleted, never the CPU itself.
            path = self.devices.removed(data[1])
            return Q.event("DEVICE_DELETED", {"path": f"{path}/lapic"})
        if data[0] == "SHUTDOWN":
            return Q.event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        if data[0] == "RESET":
            return Q.event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if data[0] == "ACPI_DEVICE_OST":
            _, slot, event, status = data
            info: dict = {}
            ident = self.devices.ids.get(slot)
            if ident is not None and self.qm.m.cpus[slot].present:
                info["device"] = ident
            info.update(
                {"slot": str(slot), "slot-type": "CPU", "source": event, "status": status}
            )  # QAPI order
            return Q.event("ACPI_DEVICE_OST", {"info": info})
        return None

    # -- io ---------------------------------------------------------------------------------------
    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            if conn.wsock is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            else:
                conn.wsock.sendall(data)
        except (BrokenPipeError, ConnectionError, OSError):
            if conn.kind == "qmp":
                self._drop(conn)
            else:
                self.done = True

    def _drop(self, conn: Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.wsock)  # type: ignore[arg-type]
        with contextlib.suppress(ValueError):
            self.qmp_clients.remove(conn)
        if conn.wsock is not None:
            conn.wsock.close()


def _listen(ch: Chardev) -> socket.socket:
    if ch.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(ch.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(ch.path)
    elif ch.kind == "tcp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ch.host, ch.port))
    else:
        raise CmdlineError(f"cannot listen on '{ch.kind}'")
    sock.listen(4)
    return sock


def _connect(ch: Chardev) -> socket.socket:
    if ch.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(ch.path)
        except OSError:
            raise CmdlineError(f"Failed to connect to '{ch.path}': No such file or directory") from None
        return sock
    if ch.kind == "tcp":
        try:
            return socket.create_connection((ch.host, ch.port))
        except OSError as err:
            raise CmdlineError(f"Failed to connect to '{ch.host}:{ch.port}': {err.strerror}") from None
    raise CmdlineError("qtest needs stdio, unix: or tcp:")


def main(argv: list[str] | None = None) -> None:
    prog = os.path.basename(sys.argv[0]) if argv is None else "smm-hotplug-qemu"
    args = sys.argv[1:] if argv is None else argv
    warnings: list[str] = []

    def warn() -> None:  # what QEMU reports on the way, before it carries on or gives up
        for line in warnings:
            print(f"{prog}: {line}", file=sys.stderr)
        warnings.clear()

    try:
        opts = parse(args, warnings)
        warn()
        if opts.qtest is None and not opts.qmp:
            raise CmdlineError("nothing to serve: give -qtest and/or -qmp")
        endpoint = Endpoint(opts)
        endpoint.open()
    except AccelHelpRequested:
        warn()
        print(HELP, end="")
        sys.exit(0)
    except CmdlineError as err:
        warn()
        print(f"{prog}: {err.line()}", file=sys.stderr)
        sys.exit(1)
    except OSError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)
    with contextlib.suppress(KeyboardInterrupt):
        endpoint.serve()
    sys.exit(0)


if __name__ == "__main__":
    main()
