"""smm-hotplug-qemu: the model behind QEMU's command line, qtest and QMP.

One process, one machine state, several channels multiplexed with ``selectors``: the qtest
channel (stdio, or a socket QEMU-style: connect as a client unless ``server=on``) and any number
of QMP monitors (``-qmp``, or ``-mon`` on a ``-chardev``; unix or tcp, server or client, or
stdio).  Every access goes through the same model as the simulator and the checker; QMP events
and IRQ lines are pushed as the model reports them.

No input stalls it: each channel is read a bounded chunk at a time and its bytes are handled in
time linear in their number (the JSON streamer keeps QEMU's limits), answers to sockets are
queued and written as the peer takes them, and standard input that cannot be polled (a regular
file, /dev/null) is read a chunk per turn of the loop.  As in QEMU, the machine goes on running
when a channel closes; SIGTERM, SIGINT and SIGHUP end it with status 0, a SHUTDOWN event and,
unless qtest drives the machine, QEMU's "terminating on signal" line.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field

from smm_hotplug.hw.trace import Event
from smm_hotplug.interfaces.qemu import chardev, jsonparse
from smm_hotplug.interfaces.qemu import qmp as Q
from smm_hotplug.interfaces.qemu.accel import HELP
from smm_hotplug.interfaces.qemu.cmdline import (
    AccelHelpRequested,
    Chardev,
    CmdlineError,
    Exit,
    Options,
    parse,
)
from smm_hotplug.interfaces.qemu.qtest import QtestLog, QtestSession
from smm_hotplug.interfaces.qemu.session import NoMachine, QemuMachine

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
CHUNK = 65536  # bytes read from one channel per turn of the loop
SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)


@dataclass(eq=False)
class Conn:
    kind: str  # "qtest" | "qmp"
    rfd: int
    sock: socket.socket | None  # None: standard input/output
    pollable: bool = True
    eof: bool = False
    pending: list[bytes] = field(default_factory=list)  # a qtest line not yet complete
    out: collections.deque[memoryview] = field(default_factory=collections.deque)  # not taken yet
    session: Q.QmpSession | None = None
    stream: jsonparse.Streamer | None = None


@dataclass
class Endpoint:
    opts: Options
    qm: QemuMachine | NoMachine = field(init=False)
    devices: Q.DeviceTable | None = field(init=False)
    qtest: QtestSession = field(init=False)
    log: QtestLog = field(init=False)
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    conns: list[Conn] = field(default_factory=list)
    qtest_conn: Conn | None = None
    done: bool = False
    signal_info: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.opts.machine.is_none:
            self.qm, self.devices = NoMachine(), None
        else:
            self.qm = QemuMachine(self.opts.platform(), firmware=not self.opts.accel_qtest)
            self.devices = Q.DeviceTable(self.qm)
        self.qtest = QtestSession(self.qm, accel_qtest=self.opts.accel_qtest)
        self.log = QtestLog(self.opts.qtest_log)

    # -- setup --------------------------------------------------------------------------------
    def open(self) -> None:
        """Open every channel the command line asks for, in QEMU's order: monitors, then qtest."""
        stdio_users = [
            ch for ch in [*self.opts.qmp, self.opts.qtest] if ch is not None and ch.kind == "stdio"
        ]
        if len(stdio_users) > 1:
            raise CmdlineError("cannot use stdio by multiple character devices")
        for ch in self.opts.qmp:
            if ch.server:
                self._listen(ch)
            elif ch.kind == "stdio":
                self._add_qmp(Conn("qmp", sys.stdin.fileno(), None))
            else:
                sock = chardev.connect(ch)
                self._add_qmp(Conn("qmp", sock.fileno(), sock))
        ch = self.opts.qtest
        if ch is None:
            return
        if ch.kind == "stdio":
            conn = Conn("qtest", sys.stdin.fileno(), None)
        elif ch.server:
            lsock = chardev.listen(ch)
            client, _ = lsock.accept()  # QEMU waits for the qtest client before it starts
            lsock.close()
            conn = Conn("qtest", client.fileno(), client)
        else:
            sock = chardev.connect(ch)
            conn = Conn("qtest", sock.fileno(), sock)
        self.qtest_conn = conn
        self._register(conn)
        self.log.opened_now()

    def _listen(self, ch: Chardev) -> None:
        lsock = chardev.listen(ch)
        lsock.setblocking(False)
        self.sel.register(lsock, READ, ("listen", lsock))

    def _register(self, conn: Conn) -> None:
        if conn.sock is not None:
            conn.sock.setblocking(False)
        self.conns.append(conn)
        try:
            self.sel.register(conn.rfd, READ, ("conn", conn))
        except PermissionError:
            conn.pollable = False  # a regular file or /dev/null: always readable, read it in turns

    def _add_qmp(self, conn: Conn) -> None:
        conn.session = Q.QmpSession(self.qm, self.devices)
        conn.stream = jsonparse.Streamer()
        self._register(conn)
        self._send(conn, Q.encode(Q.greeting()))

    # -- signals ------------------------------------------------------------------------------
    def catch_signals(self) -> None:
        """SIGINT, SIGHUP and SIGTERM are taken by a thread with sigwaitinfo (which tells who sent
        them, as QEMU reports) and handed to the loop through a pipe."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        self.sel.register(wake_r, READ, ("signal", None))
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)

        def wait() -> None:
            info = signal.sigwaitinfo(SIGNALS)
            self.signal_info = (info.si_signo, info.si_pid)
            os.write(wake_w, b"s")

        threading.Thread(target=wait, daemon=True).start()

    def _on_signal(self) -> None:
        assert self.signal_info is not None
        signo, pid = self.signal_info
        # qemu_kill_report: said only when qtest does not drive the machine.
        if self.opts.qtest is None:
            if pid == 0:
                print(f"{_prog()}: terminating on signal {signo}", file=sys.stderr)
            else:
                print(
                    f"{_prog()}: terminating on signal {signo} from pid {pid} ({_pid_name(pid)})",
                    file=sys.stderr,
                )
        self.qm.events.append(Event("qmp", "qmp", "SHUTDOWN", data=("SHUTDOWN", "host-signal")))
        self._flush_events()
        self.done = True

    # -- loop -------------------------------------------------------------------------------------
    def serve(self) -> None:
        while not self.done:
            polling = [c for c in self.conns if not c.pollable and not c.eof]
            for key, events in self.sel.select(timeout=0 if polling else None):
                kind, obj = key.data
                if kind == "signal":
                    self._on_signal()
                elif kind == "listen":
                    self._accept(obj)
                elif events & WRITE:
                    self._flush(obj)
                if kind == "conn" and events & READ:
                    self._read(obj)
                if self.done:
                    break
            for conn in polling:
                if not self.done:
                    self._read(conn)
        for conn in self.conns:
            self._flush_blocking(conn)

    def _accept(self, lsock: socket.socket) -> None:
        try:
            client, _ = lsock.accept()
        except BlockingIOError:
            return
        self._add_qmp(Conn("qmp", client.fileno(), client))

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(CHUNK) if conn.sock is not None else os.read(conn.rfd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._closed(conn)
        elif conn.kind == "qtest":
            self._on_qtest(conn, data)
        else:
            self._on_qmp(conn, data)

    def _closed(self, conn: Conn) -> None:
        """End of input on a channel.  QEMU carries on running, whatever else it serves: only
        quit or a signal ends it."""
        conn.eof = True
        if conn.pollable:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(conn.rfd)
        if conn is self.qtest_conn:
            self.log.closed_now()
            self.qtest_conn = None
        if conn.sock is not None:
            conn.sock.close()
        with contextlib.suppress(ValueError):
            self.conns.remove(conn)

    def _on_qtest(self, conn: Conn, data: bytes) -> None:
        start = 0
        while (nl := data.find(b"\n", start)) >= 0:
            conn.pending.append(data[start:nl])
            raw = b"".join(conn.pending)
            conn.pending = []
            start = nl + 1
            line = raw.decode("latin-1")
            self.log.received(line)
            for answer in self.qtest.handle(line):
                self._qtest_send(answer)
            self._flush_events()
        if start < len(data):
            conn.pending.append(data[start:])

    def _qtest_send(self, line: str) -> None:
        if self.qtest_conn is not None:
            self.log.sent(line)
            self._send(self.qtest_conn, (line + "\n").encode("latin-1", errors="replace"))

    def _on_qmp(self, conn: Conn, data: bytes) -> None:
        assert conn.session is not None and conn.stream is not None
        for item in conn.stream.feed(data):
            if isinstance(item, jsonparse.JsonError):
                reply: dict = {"error": {"class": "GenericError", "desc": str(item)}}
            else:
                reply = conn.session.handle(item)
            if conn.session.quit:
                self.qm.events.append(Event("qmp", "qmp", "SHUTDOWN", data=("SHUTDOWN", "host-qmp-quit")))
            # Events a command causes reach the clients before its return, as in QEMU.
            self._flush_events()
            self._send(conn, Q.encode(reply))
            if conn.session.quit:
                self.done = True
                return

    # -- events -----------------------------------------------------------------------------------
    def _flush_events(self) -> None:
        for line in self.qtest.poll_irqs():
            self._qtest_send(line)
        for ev in self.qm.take_events():
            msg = self._qmp_event(ev.data)
            if msg is not None:
                for conn in self.conns:
                    if conn.session is not None and conn.session.negotiated:
                        self._send(conn, Q.encode(msg))

    def _qmp_event(self, data: tuple) -> dict | None:
        if not data:
            return None
        if data[0] == "DEVICE_DELETED" and self.devices is not None:
            # QEMU 7.2 reports only the CPU's lapic child as deleted, never the CPU itself.
            path = self.devices.removed(data[1])
            return Q.event("DEVICE_DELETED", {"path": f"{path}/lapic"})
        if data[0] == "SHUTDOWN":
            return Q.event("SHUTDOWN", {"guest": False, "reason": data[1]})
        if data[0] == "RESET":
            return Q.event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if data[0] == "ACPI_DEVICE_OST" and isinstance(self.qm, QemuMachine) and self.devices is not None:
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

    # -- output -----------------------------------------------------------------------------------
    def _send(self, conn: Conn, data: bytes) -> None:
        if conn.sock is None:
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # nobody reads standard output any more; QEMU's stdio chardev drops it too
            return
        conn.out.append(memoryview(data))
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        """Write what the peer takes now; wait for it to take the rest."""
        assert conn.sock is not None
        try:
            while conn.out:
                head = conn.out[0]
                sent = conn.sock.send(head)
                if sent < len(head):
                    conn.out[0] = head[sent:]
                    break
                conn.out.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            conn.out.clear()
        if conn.eof or conn.sock.fileno() < 0:
            return
        want = READ | (WRITE if conn.out else 0)
        with contextlib.suppress(KeyError, ValueError):
            if self.sel.get_key(conn.rfd).events != want:
                self.sel.modify(conn.rfd, want, ("conn", conn))

    def _flush_blocking(self, conn: Conn) -> None:
        """Before exiting: what is still queued (e.g. the answer to quit), given 5 s to leave."""
        if conn.sock is not None and conn.out and conn.sock.fileno() >= 0:
            with contextlib.suppress(OSError):
                conn.sock.settimeout(5)
                for part in conn.out:
                    conn.sock.sendall(part)


def _pid_name(pid: int) -> str:
    """qemu_get_pid_name: the sender's command line up to its first NUL."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0", 1)[0].decode("utf-8", errors="replace")
    except OSError:
        return "<unknown process>"


def _prog() -> str:
    return os.path.basename(sys.argv[0]) or "smm-hotplug-qemu"


def main(argv: list[str] | None = None) -> None:
    prog = _prog() if argv is None else "smm-hotplug-qemu"
    args = sys.argv[1:] if argv is None else argv
    warnings: list[str] = []

    def warn() -> None:  # what QEMU reports on the way, before it carries on or gives up
        for line in warnings:
            print(f"{prog}: {line}", file=sys.stderr)
        warnings.clear()

    try:
        opts = parse(args, warnings, prog=prog)
        warn()
        if opts.qtest is None and not opts.qmp:
            raise CmdlineError("nothing to serve: give -qtest and/or -qmp (see -help)")
        endpoint = Endpoint(opts)
        endpoint.catch_signals()
        endpoint.open()
    except Exit as done:
        sys.stdout.write(done.text)
        sys.exit(0)
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
    endpoint.serve()
    sys.exit(0)


if __name__ == "__main__":
    main()
