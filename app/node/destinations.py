"""Sending results to a destination: DICOM C-STORE (pynetdicom) or DICOMweb STOW-RS (dicomweb-client).

A send either acknowledges files one by one, or ends with one of two failures that the outbox
treats differently:

- `DestinationUnreachable`: no association / HTTP connection, or it broke off (the destination is
  down): retried with backoff for as long as it takes, nothing is counted against the results;
- `DestinationRefused`: the destination answered with a failure status for a file (e.g. 0xA700
  Out of Resources, 0xA900, 0xC000, HTTP 4xx): counted, retried with backoff, and after
  `delivery.max_rejections` the results are set aside as undeliverable.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pydicom
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification
from pynetdicom.status import code_to_category

from app.node.admission import printable
from app.node.config import ClientTLS, DestinationSettings

logger = logging.getLogger("biomedclip_map.node.delivery")

STATUS_SUCCESS = "Success"
STATUS_WARNING = "Warning"


class DestinationUnreachable(ConnectionError):
    """The destination could not be reached or the connection broke off; the message says how."""


class DestinationRefused(RuntimeError):
    """The destination answered with a failure status for a file; the message names file and status."""

    def __init__(self, message: str, file_name: str):
        super().__init__(message)
        self.file_name = file_name


def set_tcp_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle's algorithm, so small PDUs do not wait ~40 ms for an ACK."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def client_ssl_context(tls: ClientTLS) -> ssl.SSLContext:
    """A TLS client context verifying the destination with the configured CA bundle (or the system's)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_certificates) if tls.ca_certificates else None)
    if tls.certificate is not None:
        context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    return context


@dataclass(frozen=True)
class FileIdentity:
    """SOP Class and transfer syntax of a result file, for the presentation contexts."""

    sop_class_uid: str
    transfer_syntax_uid: str


def read_identity(path: Path) -> FileIdentity:
    meta = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
    return FileIdentity(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))


class DimseDestination:
    """A C-STORE SCP (PACS, workstation, router)."""

    def __init__(self, settings: DestinationSettings, calling_ae_title: str, *, tcp_nodelay: bool = True):
        self.settings = settings
        self.name = settings.name
        self.calling_ae_title = settings.calling_ae_title or calling_ae_title
        self.tcp_nodelay = tcp_nodelay
        self.timeout_s = settings.timeout_s

    def _ae(self, contexts: list, timeout_s: float | None = None) -> AE:
        ae = AE(ae_title=self.calling_ae_title)
        ae.requested_contexts = contexts
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout_s or self.timeout_s
        return ae

    def _associate(self, ae: AE):
        s = self.settings
        kwargs = {"ae_title": s.ae_title, "evt_handlers": [(evt.EVT_CONN_OPEN, set_tcp_nodelay)] if self.tcp_nodelay else []}
        if s.tls is not None:
            kwargs["tls_args"] = (client_ssl_context(s.tls), s.tls.server_hostname or s.host)
        assoc = ae.associate(s.host, s.port, **kwargs)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            raise DestinationUnreachable(f"association rejected by {s.ae_title} (check that it knows AE title {self.calling_ae_title})")
        raise DestinationUnreachable(f"no association with {s.ae_title}@{s.host}:{s.port} (connection refused, timed out or aborted)")

    def echo(self) -> None:
        """C-ECHO (5 s at most, for /readyz); DestinationUnreachable when it does not answer Success."""
        assoc = self._associate(self._ae([build_context(Verification)], min(self.timeout_s, 5.0)))
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or status.get("Status") != 0x0000:
            raise DestinationUnreachable(f"C-ECHO to {self.settings.ae_title} did not answer Success")

    def send(self, folder: Path, names: list[str], acknowledged: Callable[[str], None]) -> None:
        """C-STORE each file in one association, calling `acknowledged(name)` after each success."""
        identities = {name: read_identity(folder / name) for name in names}
        contexts, seen = [], set()
        for identity in identities.values():
            key = (identity.sop_class_uid, identity.transfer_syntax_uid)
            if key not in seen:
                seen.add(key)
                contexts.append(build_context(identity.sop_class_uid, [identity.transfer_syntax_uid]))
        assoc = self._associate(self._ae(contexts))
        try:
            for name in names:
                try:
                    status = assoc.send_c_store(folder / name)
                except ValueError as exc:  # pynetdicom: no accepted presentation context for this object
                    raise DestinationRefused(
                        f"{self.settings.ae_title} does not accept {name}: its SOP Class "
                        f"{identities[name].sop_class_uid} / transfer syntax {identities[name].transfer_syntax_uid} "
                        "was not accepted in association negotiation",
                        name,
                    ) from exc
                if not status or "Status" not in status:
                    raise DestinationUnreachable(f"{self.settings.ae_title} gave no answer to the C-STORE of {name} (connection lost or timed out)")
                code = int(status.Status)
                category = code_to_category(code)
                if category == STATUS_SUCCESS or category == STATUS_WARNING:
                    if category == STATUS_WARNING:
                        logger.warning("%s stored %s with warning status 0x%04X", self.name, name, code)
                    acknowledged(name)
                    continue
                comment = printable(status.get("ErrorComment", "") or "")  # the destination's text: escaped for the log
                raise DestinationRefused(
                    f"{self.settings.ae_title} refused {name} with status 0x{code:04X} ({category}"
                    f"{': ' + comment if comment else ''})",
                    name,
                )
        finally:
            if assoc.is_established:
                assoc.release()


class DicomWebDestination:
    """A DICOMweb server's STOW-RS endpoint."""

    def __init__(self, settings: DestinationSettings):
        self.settings = settings
        self.name = settings.name
        self.timeout_s = settings.timeout_s

    def _client(self):
        from dicomweb_client.api import DICOMwebClient

        headers = {}
        if self.settings.token_env:
            token = os.environ.get(self.settings.token_env, "")
            if not token:
                raise DestinationUnreachable(f"environment variable {self.settings.token_env} (destinations[].token_env) is empty")
            headers["Authorization"] = f"Bearer {token}"
        return DICOMwebClient(url=self.settings.stow_url, headers=headers, timeout=self.timeout_s)

    def echo(self) -> None:
        """A TCP connection to the server (DICOMweb has no echo); DestinationUnreachable if impossible."""
        url = urlparse(self.settings.stow_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            socket.create_connection((url.hostname, port), timeout=min(self.timeout_s, 5)).close()
        except OSError as exc:
            raise DestinationUnreachable(f"cannot connect to {url.hostname}:{port}: {exc.strerror or exc}") from exc

    def send(self, folder: Path, names: list[str], acknowledged: Callable[[str], None]) -> None:
        """STOW-RS each file (one request per file, so acknowledgements are per file)."""
        import requests

        client = self._client()
        for name in names:
            dataset = pydicom.dcmread(folder / name)
            try:
                response = client.store_instances([dataset])
            except requests.HTTPError as exc:
                code = exc.response.status_code if exc.response is not None else 0
                if 400 <= code < 500 and code not in (408, 429):
                    raise DestinationRefused(f"{self.settings.stow_url} refused {name} with HTTP {code}", name) from exc
                raise DestinationUnreachable(f"{self.settings.stow_url} answered HTTP {code} for {name}") from exc
            except requests.RequestException as exc:
                raise DestinationUnreachable(f"{self.settings.stow_url}: {type(exc).__name__}") from exc
            failed = response.get("FailedSOPSequence") if response is not None else None
            if failed:
                reason = failed[0].get("FailureReason")
                raise DestinationRefused(
                    f"{self.settings.stow_url} refused {name} (failure reason {int(reason) if reason is not None else 'not given'})",
                    name,
                )
            acknowledged(name)


def make_destination(settings: DestinationSettings, calling_ae_title: str, *, tcp_nodelay: bool) -> DimseDestination | DicomWebDestination:
    if settings.is_dicomweb:
        return DicomWebDestination(settings)
    return DimseDestination(settings, calling_ae_title, tcp_nodelay=tcp_nodelay)
