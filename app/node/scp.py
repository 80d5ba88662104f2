"""The Storage SCP: pynetdicom event handlers that put every instance durably into the spool.

Handlers follow pynetdicom's event style (`evt.EVT_C_STORE` returns a status, the other events are
notifications). A C-STORE answers Success only after the instance's bytes (exactly as received,
with File Meta Information added) are on disk: written, `fdatasync`'d, renamed into the study's
incoming folder and the folder flushed. Anything else gets a failure status that tells the sender
to keep its copy, with an Error Comment and one log line saying why:

- 0xC210 Cannot Understand: the data set is not well-formed in the transfer syntax of its
  presentation context (`app.node.strict_parse`: truncated, trailing bytes, the other VR form),
  cannot be decoded, or lacks the SOP Class / Instance UIDs (a copy is kept in `spool/rejected/`);
- 0xA900 Data Set Does Not Match SOP Class: the Study Instance UID is missing or invalid, or the
  data set's SOP UIDs differ from the request's (a copy is kept in `spool/rejected/`);
- 0xA700 Out of Resources: the spool is full (disk free space under `spool.min_free_bytes`,
  `spool.max_bytes` reached, or the disk filled while writing) or cannot be written.

Connections and associations are admitted by `app.node.admission` (pending-connection limits at
accept, AE titles and PDU size at the A-ASSOCIATE-RQ, then per-address and total association
slots), with one log line per rejection and every network value escaped.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass, field

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dsutils import encode_file_meta

from app.node.admission import AdmissionControl, AdmissionLimits, GuardedAssociationServer, install_network_log_filter, printable
from app.node.config import DicomSettings
from app.node.destinations import set_tcp_nodelay
from app.node.grouping import StudyGrouper
from app.node.metrics import NodeMetrics
from app.node.priority import UrgencyRules, urgency_reason
from app.node.sop_classes import supported_contexts
from app.node.spool import Spool, SpoolError, SpoolFullError
from app.node.strict_parse import MalformedDataSet, check_encoding
from app.node.study_archive import StudyArchive
from operators.dicom_input.image_provenance import own_output_reason
from operators.dicom_input.study_refs import study_ref, uid_ref

logger = logging.getLogger("biomedclip_map.node.scp")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DOES_NOT_MATCH = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC210
UID_PATTERN = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
PREAMBLE = b"\x00" * 128 + b"DICM"
UNDEFINED_LENGTH = 0xFFFFFFFF


class StoreRefused(Exception):
    """A C-STORE that is answered with a failure status; carries the status and the reason."""

    def __init__(self, status: int, outcome: str, reason: str):
        super().__init__(reason)
        self.status = status
        self.outcome = outcome


@dataclass
class AssociationStats:
    """What one incoming association did, for its closing log line."""

    calling_ae: str
    address: str
    stored: int = 0
    refused: int = 0
    refs: set[str] = field(default_factory=set)


def server_ssl_context(settings: DicomSettings) -> ssl.SSLContext | None:
    """TLS for incoming associations, or None; OSError/SSLError naming the file when unusable."""
    tls = settings.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.client_ca_certificates is not None:
        context.load_verify_locations(cafile=str(tls.client_ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def check_dataset(ds: Dataset, affected_class: str, affected_instance: str) -> str:
    """The data set's Study Instance UID; StoreRefused when it cannot be accepted.

    pydicom decodes leniently (random bytes decode into a data set of one odd element, a truncated
    stream into fewer elements), so a data set is accepted only if its last element is complete
    and it carries the SOP UIDs of the C-STORE request and a valid Study Instance UID.
    """
    tags = list(ds.keys())
    if not tags:
        raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", "the data set is empty")
    last = ds.get_item(tags[-1])
    if isinstance(last, RawDataElement) and last.length != UNDEFINED_LENGTH and last.value is not None:
        if len(last.value) < last.length:
            raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", "the data set cannot be decoded (truncated, or not DICOM)")
    sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    sop_instance = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop_class and not sop_instance:
        raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", "the data set cannot be decoded (no SOP Class or Instance UID in it)")
    if sop_class != affected_class or sop_instance != affected_instance:
        raise StoreRefused(
            STATUS_DOES_NOT_MATCH, "refused_mismatch", "the data set's SOP Class/Instance UID differ from the C-STORE request's"
        )
    study_uid = str(ds.get("StudyInstanceUID", "") or "").strip()
    if not study_uid:
        raise StoreRefused(STATUS_DOES_NOT_MATCH, "refused_no_study_uid", "the Study Instance UID (0020,000D) is missing")
    if len(study_uid) > 64 or not UID_PATTERN.match(study_uid):
        raise StoreRefused(STATUS_DOES_NOT_MATCH, "refused_no_study_uid", "the Study Instance UID (0020,000D) is not a valid UID")
    return study_uid


class StorageSCP:
    """The node's DICOM listener."""

    def __init__(
        self,
        settings: DicomSettings,
        spool: Spool,
        grouper: StudyGrouper,
        archive: StudyArchive,
        metrics: NodeMetrics,
        *,
        salt: str,
        urgency: UrgencyRules,
    ):
        self.settings = settings
        self.spool = spool
        self.grouper = grouper
        self.archive = archive
        self.metrics = metrics
        self.salt = salt
        self.urgency = urgency
        self.server = None
        self.admission = AdmissionControl(
            AdmissionLimits(
                max_associations=settings.max_associations,
                max_associations_per_address=settings.max_associations_per_address,
                max_pending_connections=settings.max_pending_connections,
                max_pending_per_address=settings.max_pending_per_address,
                allow_calling_aes=tuple(settings.allow_calling_aes),
                called_ae_title=settings.ae_title if settings.require_called_ae_title else None,
            ),
            acse_timeout_s=settings.acse_timeout_s,
        )
        self._stats: dict[int, AssociationStats] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Listen on `dicom.bind:dicom.port`; OSError naming the address if it is taken."""
        # pynetdicom's own per-message logging would quote SOP Instance UIDs; keep it off.
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = False
        _config.LOG_RESPONSE_IDENTIFIERS = False
        install_network_log_filter()
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.supported_contexts = supported_contexts(s.accept_sop_classes)
        ae.maximum_pdu_size = s.max_pdu_bytes
        # pynetdicom's own slot count includes connections still negotiating; admission control
        # counts accepted associations itself (see app.node.admission), so pynetdicom's is set past it.
        ae.maximum_associations = s.max_associations + s.max_pending_connections
        ae.network_timeout = s.network_timeout_s
        ae.acse_timeout = s.acse_timeout_s
        handlers = [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_ESTABLISHED, self.on_established),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
        ]
        if s.tcp_nodelay:
            handlers.insert(0, (evt.EVT_CONN_OPEN, set_tcp_nodelay))
        try:
            server = ae.make_server(
                (s.bind, s.port), evt_handlers=handlers, ssl_context=server_ssl_context(s),
                server_class=GuardedAssociationServer, admission=self.admission, acse_timeout_s=s.acse_timeout_s,
            )
        except OSError as exc:
            raise OSError(
                exc.errno, f"cannot listen on {s.bind}:{s.port} (dicom.bind / dicom.port): {exc.strerror or exc}"
            ) from exc
        ae._servers.append(server)  # as AE.start_server does, so that AE.shutdown() stops it too
        threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True).start()
        self.server = server
        logger.info(
            "DICOM listener %s on %s:%d%s; calling AE titles allowed: %s",
            s.ae_title,
            s.bind,
            self.port,
            " (TLS)" if s.tls else "",
            ", ".join(s.allow_calling_aes) if s.allow_calling_aes else "any (dicom.allow_calling_aes is empty)",
        )

    @property
    def port(self) -> int:
        return int(self.server.server_address[1]) if self.server else self.settings.port

    def stop(self) -> None:
        """Stop accepting associations; running ones are ended by pynetdicom."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # ----------------------------------------------------------------------- associations

    def on_requested(self, event: evt.Event) -> None:
        """At the A-ASSOCIATE-RQ: admission control decides (AE titles, PDU size, then the slots)."""
        assoc = event.assoc
        connection = getattr(assoc, "_node_connection", None)
        if connection is None:  # not from the guarded server: nothing to decide here
            return
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        rejection = self.admission.decide(
            connection, calling, str(request.called_ae_title).strip(), request.maximum_length_received
        )
        if rejection is None:
            sock = getattr(assoc.dul.socket, "socket", None)
            if sock is not None:
                sock.settimeout(self.settings.network_timeout_s)
            return
        self.admission.settle(connection)
        self.metrics.associations.labels(result="rejected").inc()
        logger.warning(
            "association from AE '%s' (%s) rejected: %s",
            printable(calling), printable(f"{assoc.requestor.address}:{assoc.requestor.port}"), rejection.reason,
        )
        assoc.acse.send_reject(rejection.result, rejection.source, rejection.diagnostic)
        assoc.kill()

    def on_rejected(self, event: evt.Event) -> None:
        """One line per association pynetdicom rejected (allow-list, called AE title, association limit)."""
        assoc = event.assoc
        request = assoc.requestor.primitive
        calling = str(request.calling_ae_title).strip()
        address = f"{assoc.requestor.address}:{assoc.requestor.port}"
        answer = assoc.acceptor.primitive
        diagnostic = (answer.result_source, answer.diagnostic) if answer is not None else (None, None)
        if diagnostic == (0x01, 0x03):
            why = "calling AE title not in dicom.allow_calling_aes"
        elif diagnostic == (0x01, 0x07):
            why = f"it called AE title '{str(request.called_ae_title).strip()}', this node is '{self.settings.ae_title}' (dicom.ae_title)"
        elif diagnostic == (0x03, 0x02):
            why = f"dicom.max_associations ({self.settings.max_associations}) associations are already open"
        else:
            why = f"result source {diagnostic[0]}, diagnostic {diagnostic[1]}"
        self.metrics.associations.labels(result="rejected").inc()
        logger.warning("association from AE '%s' (%s) rejected: %s", printable(calling), printable(address), why)

    def on_established(self, event: evt.Event) -> None:
        assoc = event.assoc
        with self._lock:
            self._stats[id(assoc)] = AssociationStats(
                str(assoc.requestor.ae_title).strip(), f"{assoc.requestor.address}:{assoc.requestor.port}"
            )
        self.metrics.associations.labels(result="accepted").inc()

    def _stats_of(self, assoc) -> AssociationStats:
        with self._lock:
            stats = self._stats.get(id(assoc))
            if stats is None:
                stats = self._stats[id(assoc)] = AssociationStats(str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address))
            return stats

    def on_released(self, event: evt.Event) -> None:
        """One line per released association: what it stored."""
        stats = self._pop_stats(event.assoc)
        if stats is None:
            return
        refused = f", {stats.refused} refused" if stats.refused else ""
        logger.info(
            "association from AE '%s' (%s) released: %d instance(s) stored%s; studies: %s",
            stats.calling_ae, stats.address, stats.stored, refused, ", ".join(sorted(stats.refs)) or "none",
        )

    def on_aborted(self, event: evt.Event) -> None:
        """A warning per association that ended without a release (A-ABORT, lost connection, timeout)."""
        stats = self._pop_stats(event.assoc)
        if stats is None:
            return
        self.metrics.associations.labels(result="aborted").inc()
        refused = f", {stats.refused} refused" if stats.refused else ""
        logger.warning(
            "association from AE '%s' (%s) was aborted (A-ABORT, lost connection or timeout) after %d instance(s) "
            "stored%s; studies: %s. The stored instances are kept; each study is complete after its quiet period "
            "(the sender may send the rest again)",
            stats.calling_ae, stats.address, stats.stored, refused, ", ".join(sorted(stats.refs)) or "none",
        )

    def _pop_stats(self, assoc) -> AssociationStats | None:
        with self._lock:
            return self._stats.pop(id(assoc), None)

    # ----------------------------------------------------------------------- DIMSE

    def on_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int | Dataset:
        """Store one instance durably, then answer; never raises (every failure has a status)."""
        started = time.perf_counter()
        stats = self._stats_of(event.assoc)
        request = event.request
        affected_class = str(request.AffectedSOPClassUID or "").strip()
        affected_instance = str(request.AffectedSOPInstanceUID or "").strip()
        try:
            try:
                check_encoding(request.DataSet.getbuffer(), event.context.transfer_syntax)
            except MalformedDataSet as exc:
                raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", f"the data set cannot be decoded: {exc}") from exc
            try:
                ds = event.dataset
            except Exception as exc:  # pydicom raises many types on malformed input
                raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", f"the data set cannot be decoded ({type(exc).__name__})") from exc
            try:
                study_uid = check_dataset(ds, affected_class, affected_instance)
            except StoreRefused:
                raise
            except Exception as exc:
                raise StoreRefused(STATUS_CANNOT_UNDERSTAND, "refused_corrupt", f"the data set cannot be decoded ({type(exc).__name__})") from exc
            if self.archive.is_own_output(affected_instance) or own_output_reason(ds) is not None:
                self.metrics.instances_received.labels(outcome="own_result").inc()
                logger.debug("a result of this product came back from AE '%s'; acknowledged, not analysed", stats.calling_ae)
                return STATUS_SUCCESS
            ref = study_ref(study_uid, self.salt)
            name = uid_ref(affected_instance, self.salt, prefix="in") + ".dcm"
            urgent = urgency_reason(ds, getattr(request, "Priority", None), self.urgency)
            chunks = [PREAMBLE + encode_file_meta(event.file_meta), request.DataSet.getbuffer()]
            try:
                stored = self.spool.store_instance(ref, name, chunks, urgent_reason=urgent)
            except SpoolFullError as exc:
                raise StoreRefused(STATUS_OUT_OF_RESOURCES, "refused_spool_full", str(exc)) from exc
            except SpoolError as exc:
                raise StoreRefused(STATUS_OUT_OF_RESOURCES, "refused_write_error", str(exc)) from exc
        except StoreRefused as refusal:
            return self._refuse(event, stats, refusal)
        self.grouper.touch(ref)
        stats.stored += 1
        stats.refs.add(ref)
        self.metrics.instances_received.labels(outcome="stored").inc()
        self.metrics.stage_seconds.labels(stage="store").observe(time.perf_counter() - started)
        if stored.first_of_study:
            logger.info(
                "study %s: receiving from AE '%s'%s", ref, stats.calling_ae, f" (urgent: {urgent})" if urgent else ""
            )
        return STATUS_SUCCESS

    def _refuse(self, event: evt.Event, stats: AssociationStats, refusal: StoreRefused) -> Dataset:
        """Answer a failure status with an Error Comment; keep undecodable data for inspection."""
        stats.refused += 1
        self.metrics.instances_received.labels(outcome=refusal.outcome).inc()
        kept = None
        if refusal.status != STATUS_OUT_OF_RESOURCES:
            try:
                data = [PREAMBLE + encode_file_meta(event.file_meta), event.request.DataSet.getbuffer()]
            except (AttributeError, TypeError, ValueError) as exc:  # the file meta cannot be encoded: keep the data set alone
                logger.debug("the rejected data set's file meta cannot be encoded (%s); its bytes are kept alone", type(exc).__name__)
                data = [event.request.DataSet.getvalue()] if event.request.DataSet is not None else []
            kept = self.spool.keep_rejected(
                data,
                {
                    "received_at": time.time(),
                    "calling_ae_title": stats.calling_ae,
                    "status": f"0x{refusal.status:04X}",
                    "reason": str(refusal),
                },
            )
        logger.warning(
            "C-STORE from AE '%s' refused with status 0x%04X: %s%s",
            stats.calling_ae,
            refusal.status,
            refusal,
            f"; the sender keeps its copy and the received data is kept as {kept}" if kept else "; the sender keeps its copy",
        )
        response = Dataset()
        response.Status = refusal.status
        response.ErrorComment = str(refusal)[:64]
        return response
