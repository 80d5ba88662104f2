"""Admission control for incoming DICOM connections: nobody who can merely reach the port locks senders out.

pynetdicom's own server gives every accepted TCP connection a thread and counts it toward
`maximum_associations` until its ACSE timeout (30 s) ends, whether or not it ever sends an
A-ASSOCIATE-RQ, and it checks that count before the calling AE title. So a few idle sockets
refuse every allowed sender. This module replaces that with three limits, checked in this order:

1. at `accept()`, in the listener thread and before any thread is started: at most
   `dicom.max_pending_per_address` connections per remote address, and `dicom.max_pending_connections`
   in all, may be *pending* (connected, association not decided yet); a connection over either limit
   is closed at once. A pending connection has `dicom.acse_timeout_s` to send its A-ASSOCIATE-RQ
   (the ARTIM timer), and a stalled partial PDU is cut off after the same time;
2. at the A-ASSOCIATE-RQ: the calling AE title (`dicom.allow_calling_aes`), the called AE title,
   and the requestor's maximum PDU length (an absurdly small one, under `MIN_PEER_PDU_BYTES`, is
   rejected here instead of failing inside pynetdicom later);
3. only then the association slots: `dicom.max_associations` in all and
   `dicom.max_associations_per_address` per remote address, counted over *accepted* associations only.

So a connection that is not (yet) an accepted association of an allowed AE never takes a slot,
and holds a thread for at most `acse_timeout_s`. Every value from the network that reaches the
log (AE titles, addresses) goes through `printable`, so control characters cannot forge log lines.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

logger = logging.getLogger("biomedclip_map.node.scp")

MIN_PEER_PDU_BYTES = 4096
"""Smallest maximum PDU length a requestor may ask for (DCMTK's ASC_MINIMUMPDUSIZE); 0 means unlimited."""
VALID_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
"""PS3.5 AE value representation: up to 16 characters of the default repertoire, no backslash."""
PENDING_POLL_S = 0.05
"""How often a pending connection is checked for having been closed by its peer."""
REFUSAL_LOG_INTERVAL_S = 10.0
"""Connections refused at accept() are logged at most once per remote address in this interval."""


def printable(value: object, limit: int = 120) -> str:
    """`value` as text safe for one log line: control, backslash and non-ASCII characters escaped, length capped."""
    text = value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)
    out = []
    for char in text.strip():
        if char == "\\":
            out.append("\\\\")
        elif 0x20 <= ord(char) < 0x7F:
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    escaped = "".join(out)
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


@dataclass(frozen=True)
class AdmissionLimits:
    """The limits of `AdmissionControl` (see the module docstring); from `DicomSettings`."""

    max_associations: int
    max_associations_per_address: int
    max_pending_connections: int
    max_pending_per_address: int
    allow_calling_aes: tuple[str, ...] = ()
    called_ae_title: str | None = None


@dataclass
class Connection:
    """One accepted TCP connection: pending until its association is accepted (then `admitted`)."""

    address: str
    opened_at: float = field(default_factory=time.monotonic)
    admitted: bool = False
    closed: bool = False


@dataclass(frozen=True)
class Rejection:
    """Why an A-ASSOCIATE-RQ is rejected: the A-ASSOCIATE-RJ fields and a sentence for the log."""

    result: int
    source: int
    diagnostic: int
    reason: str


class AdmissionControl:
    """Counts pending connections and accepted associations per remote address; decides admission."""

    def __init__(self, limits: AdmissionLimits, *, acse_timeout_s: float):
        self.limits = limits
        self.acse_timeout_s = acse_timeout_s
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._admitted: dict[str, int] = {}
        self._refusals: dict[str, tuple[float, int]] = {}

    def pending(self, address: str | None = None) -> int:
        """Pending connections (from `address`, or in all)."""
        with self._lock:
            return self._pending.get(address, 0) if address is not None else sum(self._pending.values())

    def admitted(self, address: str | None = None) -> int:
        """Accepted associations (from `address`, or in all)."""
        with self._lock:
            return self._admitted.get(address, 0) if address is not None else sum(self._admitted.values())

    def connect(self, address: str) -> Connection | None:
        """A new TCP connection from `address`: a pending `Connection`, or None when it must be closed now."""
        lim = self.limits
        with self._lock:
            from_address = self._pending.get(address, 0)
            if from_address < lim.max_pending_per_address and sum(self._pending.values()) < lim.max_pending_connections:
                self._pending[address] = from_address + 1
                return Connection(address)
        self._log_refused_connection(address, from_address)
        return None

    def _log_refused_connection(self, address: str, from_address: int) -> None:
        """One warning per address and REFUSAL_LOG_INTERVAL_S, with how many were closed meanwhile."""
        now = time.monotonic()
        with self._lock:
            last, count = self._refusals.get(address, (float("-inf"), 0))
            if now - last < REFUSAL_LOG_INTERVAL_S:
                self._refusals[address] = (last, count + 1)
                return
            self._refusals[address] = (now, 0)
        lim = self.limits
        logger.warning(
            "connection from %s closed at once: %d connection(s) from it (dicom.max_pending_per_address %d) or %d in all "
            "(dicom.max_pending_connections %d) have not completed an association yet%s",
            printable(address), from_address, lim.max_pending_per_address, self.pending(), lim.max_pending_connections,
            f"; {count} more closed in the last {REFUSAL_LOG_INTERVAL_S:.0f} s" if count else "",
        )

    def note_unassociated(self, address: str) -> None:
        """A connection ended before any association was decided: one line per address and interval."""
        now = time.monotonic()
        key = "ended:" + address
        with self._lock:
            last, count = self._refusals.get(key, (float("-inf"), 0))
            if now - last < REFUSAL_LOG_INTERVAL_S:
                self._refusals[key] = (last, count + 1)
                return
            self._refusals[key] = (now, 0)
        logger.warning(
            "connection from %s ended without an association (nothing or no decodable association request sent "
            "within dicom.acse_timeout_s %.1f s, or closed by the peer)%s",
            printable(address), self.acse_timeout_s,
            f"; {count} more like it in the last {REFUSAL_LOG_INTERVAL_S:.0f} s" if count else "",
        )

    def decide(self, connection: Connection, calling_ae: str, called_ae: str, max_pdu: int | None) -> Rejection | None:
        """At the A-ASSOCIATE-RQ: None (and the connection is admitted, taking a slot) or why it is rejected.

        The AE titles and PDU size are checked before any slot is counted, so requests that would be
        rejected anyway never compete with allowed senders for a slot.
        """
        lim = self.limits
        if not VALID_AE_TITLE.match(calling_ae):
            return Rejection(0x01, 0x01, 0x03, "the calling AE title is not a valid AE title (control characters or backslash)")
        if lim.allow_calling_aes and calling_ae not in lim.allow_calling_aes:
            return Rejection(0x01, 0x01, 0x03, "calling AE title not in dicom.allow_calling_aes")
        if lim.called_ae_title is not None and called_ae != lim.called_ae_title:
            return Rejection(
                0x01, 0x01, 0x07, f"it called AE title '{printable(called_ae)}', this node is '{lim.called_ae_title}' (dicom.ae_title)"
            )
        if max_pdu is not None and 0 < max_pdu < MIN_PEER_PDU_BYTES:
            return Rejection(
                0x01, 0x01, 0x01, f"it asked for a maximum PDU length of {max_pdu} bytes; at least {MIN_PEER_PDU_BYTES} are needed"
            )
        with self._lock:
            if connection.admitted or connection.closed:
                return None
            address = connection.address
            if sum(self._admitted.values()) >= lim.max_associations:
                return Rejection(0x02, 0x03, 0x02, f"dicom.max_associations ({lim.max_associations}) associations are already open")
            if self._admitted.get(address, 0) >= lim.max_associations_per_address:
                return Rejection(
                    0x02, 0x03, 0x02,
                    f"dicom.max_associations_per_address ({lim.max_associations_per_address}) associations from {printable(address)} are already open",
                )
            self._drop_pending(address)
            self._admitted[address] = self._admitted.get(address, 0) + 1
            connection.admitted = True
        return None

    def settle(self, connection: Connection) -> None:
        """The association was rejected: the connection stops counting as pending (it closes next)."""
        with self._lock:
            if not connection.admitted and not connection.closed:
                self._drop_pending(connection.address)
                connection.closed = True

    def close(self, connection: Connection) -> None:
        """The connection ended: free whatever it held (pending count or slot); idempotent."""
        with self._lock:
            if connection.closed:
                if connection.admitted:
                    self._drop(self._admitted, connection.address)
                    connection.admitted = False
                return
            connection.closed = True
            if connection.admitted:
                self._drop(self._admitted, connection.address)
                connection.admitted = False
            else:
                self._drop_pending(connection.address)

    def _drop_pending(self, address: str) -> None:
        self._drop(self._pending, address)

    @staticmethod
    def _drop(counts: dict[str, int], address: str) -> None:
        left = counts.get(address, 0) - 1
        if left > 0:
            counts[address] = left
        else:
            counts.pop(address, None)


class NetworkLogFilter(logging.Filter):
    """For pynetdicom's loggers: one escaped line per record, no traceback, errors demoted to DEBUG.

    pynetdicom logs a peer's protocol errors (an undecodable PDU, a reset connection) at ERROR with a
    traceback that quotes the peer's bytes, such as a calling AE title with line breaks. The node
    logs one line of its own per refused connection or association instead; pynetdicom's detail
    stays available at DEBUG, escaped.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__})" if str(exc) in message else f"{message} ({type(exc).__name__}: {exc})"
        record.msg, record.args = printable(message, 300), ()
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        if record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def install_network_log_filter() -> None:
    """Put `NetworkLogFilter` on every pynetdicom logger (logger filters are not inherited by children)."""
    names = ["pynetdicom", *(n for n in logging.root.manager.loggerDict if n.startswith("pynetdicom."))]
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, NetworkLogFilter) for f in target.filters):
            target.addFilter(NetworkLogFilter())


class _GuardedRequestHandler(RequestHandler):
    """pynetdicom's handler, run in the connection's own thread until its association ends."""

    connection: Connection

    def handle(self) -> None:
        assoc = self._create_association()
        assoc._node_connection = self.connection  # read back by the EVT_REQUESTED handler
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        nudged = False
        while assoc.is_alive():
            assoc.join(PENDING_POLL_S if not self.connection.admitted else None)
            if nudged or self.connection.admitted or self.connection.closed:
                continue
            sock = assoc.dul.socket
            closed = sock is None or not sock._is_connected or (assoc._started_dul and not assoc.dul.is_alive())
            if closed and assoc.dul.state_machine.current_state == "Sta1" and assoc.dul.to_user_queue.empty():
                # The peer closed the connection before its A-ASSOCIATE-RQ: pynetdicom would keep
                # waiting for the ACSE timeout; an empty answer ends the association thread now.
                assoc.dul.to_user_queue.put(None)
                nudged = True


class GuardedAssociationServer(ThreadedAssociationServer):
    """A pynetdicom association server with `AdmissionControl` at accept() and short ARTIM/handshake limits."""

    request_queue_size = 256
    """listen() backlog: socketserver's default of 5 lets a burst of connections delay others' SYNs by seconds."""

    def __init__(self, *args, admission: AdmissionControl, acse_timeout_s: float, **kwargs):
        self.admission = admission
        self.acse_timeout_s = acse_timeout_s
        super().__init__(*args, **kwargs)
        self.daemon_threads = True

    def service_actions(self) -> None:
        """Nothing: pynetdicom runs a full `gc.collect()` every 60 connections here, which under a flood of
        connections stalls every association of the node for the length of a collection."""

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """accept(); a TLS handshake is left to the connection's thread (with a time limit), not done here."""
        client_socket, address = self.socket.accept()
        if self.ssl_context:
            client_socket = self.ssl_context.wrap_socket(client_socket, server_side=True, do_handshake_on_connect=False)
        return client_socket, address

    def process_request(self, request, client_address) -> None:
        """Admit or close the connection here, in the listener thread; a thread is started only when admitted."""
        connection = self.admission.connect(str(client_address[0]))
        if connection is None:
            self.shutdown_request(request)
            return
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address, connection), name="dicom-connection", daemon=True
        )
        thread.start()

    def _serve_connection(self, request, client_address, connection: Connection) -> None:
        """The connection's thread: TLS handshake within the ACSE timeout, then the association."""
        try:
            request.settimeout(self.acse_timeout_s)  # bounds the handshake and any stalled PDU before admission
            if isinstance(request, ssl.SSLSocket):
                request.do_handshake()
            handler = _GuardedRequestHandler.__new__(_GuardedRequestHandler)
            handler.connection = connection
            handler.__init__(request, client_address, self)
        except (OSError, ssl.SSLError) as exc:
            logger.warning("connection from %s dropped before an association: %s", printable(client_address[0]), printable(exc, 160))
        finally:
            ended_pending = not connection.admitted and not connection.closed
            self.admission.close(connection)
            self.shutdown_request(request)
            if ended_pending:
                self.admission.note_unassociated(str(client_address[0]))
