"""Blocking network access in tests: every connection and DNS lookup, or all but loopback.

`install` replaces `socket.socket.connect`, `socket.socket.connect_ex`, `socket.create_connection`,
`socket.getaddrinfo` and the `socket.gethostby*` lookups through a setter (pytest's `monkeypatch.setattr` in fixtures, which undoes
it; plain `setattr` in a subprocess started with `python -m tests.guarded_run`). Refused attempts
are recorded and raise NetworkAccessAttempted, a BaseException so HTTP clients do not catch and
retry it. Hub offline mode is not set: the guard is what stops the traffic.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

LOOPBACK_NAMES = ("localhost",)


class NetworkAccessAttempted(BaseException):
    """Raised by the socket guard; a BaseException so HTTP clients do not retry it."""


def is_loopback(host: object) -> bool:
    """Whether `host` (an address or `localhost`) stays on this machine."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _host_of(address: object) -> object:
    return address[0] if isinstance(address, tuple) and address else address


def install(setter: Callable[[object, str, object], None], attempts: list, *, allow_loopback: bool) -> None:
    """Replace the socket functions so that only loopback (or nothing) can be reached."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_create_connection = socket.create_connection
    original_getaddrinfo = socket.getaddrinfo
    original_lookups = {name: getattr(socket, name) for name in ("gethostbyname", "gethostbyname_ex", "gethostbyaddr")}

    def check(what: str, host: object, *args) -> None:
        if allow_loopback and is_loopback(host):
            return
        attempts.append((what, host, *args))
        raise NetworkAccessAttempted(f"network access attempted: {what} {host!r} {args!r}")

    def connect(self, address, *args, **kwargs):
        check("connect", _host_of(address), address)
        return original_connect(self, address, *args, **kwargs)

    def connect_ex(self, address, *args, **kwargs):
        check("connect_ex", _host_of(address), address)
        return original_connect_ex(self, address, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        check("create_connection", _host_of(address), address)
        return original_create_connection(address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        check("getaddrinfo", host, *args)
        return original_getaddrinfo(host, *args, **kwargs)

    def lookup(name: str):
        original = original_lookups[name]

        def guarded(host, *args, **kwargs):
            check(name, host, *args)
            return original(host, *args, **kwargs)

        return guarded

    for name in original_lookups:
        setter(socket, name, lookup(name))
    setter(socket.socket, "connect", connect)
    setter(socket.socket, "connect_ex", connect_ex)
    setter(socket, "create_connection", create_connection)
    setter(socket, "getaddrinfo", getaddrinfo)
