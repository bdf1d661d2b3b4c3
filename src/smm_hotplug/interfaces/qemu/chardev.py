"""QEMU's socket chardevs as the endpoint opens them: unix or tcp, listening or connecting.

Errors carry QEMU's wording and the option they came from (chardev_socket, inet_listen_saddr,
inet_connect_saddr, unix_listen_saddr); a tcp address is resolved with getaddrinfo, as QEMU does.
"""

from __future__ import annotations

import contextlib
import os
import socket

from smm_hotplug.interfaces.qemu.cmdline import Chardev, CmdlineError


def resolve(ch: Chardev, prefix: str) -> tuple:
    """inet_parse + getaddrinfo, as QEMU resolves a tcp chardev (the port is a service name or
    number handed on as written; glibc reduces numbers modulo 65536 as it does for QEMU)."""
    try:
        infos = socket.getaddrinfo(ch.host, ch.port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        reason = err.strerror if isinstance(err, socket.gaierror) else str(err)
        raise CmdlineError(f"{prefix}address resolution failed for {ch.host}:{ch.port}: {reason}") from None
    return infos[0]


def listen(ch: Chardev) -> socket.socket:
    prefix = ch.where()
    if ch.kind == "unix":
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
            os.unlink(ch.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a temporary name and renamed once listening, so that a client that waits
        # for the path to appear never finds a socket that refuses connections.
        staging = f"{ch.path}.{os.getpid()}.tmp"
        try:
            sock.bind(staging)
            sock.listen(4)
            os.rename(staging, ch.path)
        except OSError as err:
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise CmdlineError(f"{prefix}Failed to bind socket to {ch.path}: {err.strerror}") from None
        return sock
    elif ch.kind == "tcp":
        family, kind, proto, _, addr = resolve(ch, prefix)
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as err:
            sock.close()
            raise CmdlineError(f"{prefix}Failed to bind socket: {err.strerror}") from None
    else:
        raise CmdlineError(f"cannot listen on '{ch.kind}'")
    sock.listen(4)
    return sock


def connect(ch: Chardev) -> socket.socket:
    prefix = ch.where()
    if ch.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(ch.path)
        except OSError as err:
            sock.close()
            raise CmdlineError(f"{prefix}Failed to connect to '{ch.path}': {err.strerror}") from None
        return sock
    if ch.kind == "tcp":
        family, kind, proto, _, addr = resolve(ch, prefix)
        sock = socket.socket(family, kind, proto)
        try:
            sock.connect(addr)
        except OSError as err:
            sock.close()
            raise CmdlineError(
                f"{prefix}Failed to connect to '{ch.host}:{ch.port}': {err.strerror}"
            ) from None
        return sock
    raise CmdlineError("qtest needs stdio, unix: or tcp:")
