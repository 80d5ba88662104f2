"""A Hugging Face hub stand-in on loopback, for testing `python -m models fetch` end to end.

It speaks the part of the hub's HTTP API that the pinned `huggingface_hub` (2.4.0) uses for
`HfApi.model_info`, `snapshot_download` and `hf_hub_download`, as read in that version's source:

- `GET /api/models/{repo}/revision/{rev}` (`model_info`; `files_metadata=True` adds `?blobs=True`):
  JSON with `sha` (the commit `rev` resolves to) and `siblings`; with blobs, each sibling also
  carries `size`, `blobId` and, for Git LFS files, `lfs: {sha256, size, pointerSize}`.
- `GET /api/models/{repo}/tree/{commit}?recursive=True&expand=False` (`snapshot_download` lists
  the commit): a JSON list of `{type, path, size, oid[, lfs: {oid, size, pointerSize}]}`, one page
  (no `Link` header). No entry has a `xetHash`, so the client never takes the Xet path.
- `HEAD /{repo}/resolve/{rev}/{path}` (`get_hf_file_metadata`): always `X-Repo-Commit`. A regular
  file answers 200 with `ETag: "<git blob id>"` and `Content-Length`. An LFS file answers
  `302 Found` to a storage host on another port, as the hub redirects to its CDN, with
  `X-Linked-Etag: "<sha256>"` and `X-Linked-Size` (the client does not follow a redirect to
  another host, reads the metadata from the 302 itself, and drops `Authorization` for the CDN).
  No `X-Xet-Hash` header is sent, so the download is plain HTTP even with `hf_xet` installed.
- `GET` of the same paths: the file, or the same redirect; `GET /lfs/{sha256}` on the storage host
  serves LFS content, with `Range` support (the client resumes cut-off downloads with `Range`).
- Errors carry the hub's `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`,
  `GatedRepo`) and `X-Error-Message`, which the client maps to its exception classes.

A server built with `token=...` acts as a gated mirror: hub requests without
`Authorization: Bearer <token>` get 401 `GatedRepo`. Every request is logged (`HubServer.requests`)
with its method, path, status and relevant headers; the token is never stored in the log.

Faults for tests: `corrupt` (serve LFS bytes that differ from the published sha256) and
`die_after` (send that many bytes of an LFS file, then stop both listeners and cut every open
connection, as a crashed server would).
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
REDACTED = "Bearer <redacted>"
LOGGED_HEADERS = ("Range", "Accept-Encoding")


def git_blob_id(data: bytes) -> str:
    """The git object id of a file's content (what the hub reports as `oid`/`blobId` and ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    """One file of a commit; `lfs` files are stored as pointers in git and served by the storage host."""

    path: str
    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return LFS_POINTER.format(sha256=self.sha256, size=len(self.data)).encode()

    @property
    def blob_id(self) -> str:
        return git_blob_id(self.pointer if self.lfs else self.data)

    def sibling(self, blobs: bool) -> dict:
        if not blobs:
            return {"rfilename": self.path}
        entry = {"rfilename": self.path, "blobId": self.blob_id, "size": len(self.data)}
        if self.lfs:
            entry["lfs"] = {"sha256": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return entry

    def tree_entry(self) -> dict:
        entry = {"type": "file", "oid": self.blob_id, "size": len(self.data), "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return entry


@dataclass(frozen=True)
class HubCommit:
    """A commit: its files; its id is derived from their paths and blob ids, like a git tree."""

    files: tuple[HubFile, ...]

    @property
    def sha(self) -> str:
        listing = "".join(f"{f.path}\0{f.blob_id}\n" for f in sorted(self.files, key=lambda f: f.path))
        return hashlib.sha1(listing.encode()).hexdigest()

    def file(self, path: str) -> HubFile | None:
        return next((f for f in self.files if f.path == path), None)


@dataclass
class HubRepo:
    """A model repository: its commits and the branches and tags (refs) that name them."""

    repo_id: str
    commits: list[HubCommit]
    refs: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> HubCommit | None:
        sha = self.refs.get(revision, revision)
        return next((c for c in self.commits if c.sha == sha), None)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the server saw it (the Authorization header only as `REDACTED`)."""

    host: str  # "hub" or "storage"
    method: str
    path: str
    status: int
    headers: dict[str, str]

    def line(self) -> str:
        return f"{self.host:7} {self.method:4} {self.path} -> {self.status}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Listener

    def setup(self) -> None:
        super().setup()
        self.server.hub.connections.add(self.connection)

    def finish(self) -> None:
        self.server.hub.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:  # the peer or a simulated crash closed the socket first
            pass

    def log_message(self, format: str, *args) -> None:
        """Requests are recorded in `HubServer.requests`, not printed."""

    def do_HEAD(self) -> None:
        self.server.hub.handle(self, self.server.role, head=True)

    def do_GET(self) -> None:
        self.server.hub.handle(self, self.server.role, head=False)


class _Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, hub: HubServer, role: str) -> None:
        self.hub = hub
        self.role = role
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def handle_error(self, request, client_address) -> None:
        """A connection cut by the client or by a simulated crash is expected; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class HubServer:
    """Two loopback listeners: the hub API (`url`) and the LFS storage host it redirects to."""

    def __init__(self, repos: list[HubRepo], *, token: str | None = None) -> None:
        self.repos = {repo.repo_id: repo for repo in repos}
        self._token = token
        self.corrupt: set[str] = set()
        """sha256 of LFS files whose served bytes are altered (same length)."""
        self.die_after: dict[str, int] = {}
        """sha256 of an LFS file -> bytes sent before the server dies."""
        self.requests: list[LoggedRequest] = []
        self.connections: set[socket.socket] = set()
        self.dead = False
        self._lock = threading.Lock()
        self._hub = _Listener(self, "hub")
        self._storage = _Listener(self, "storage")
        self._threads = [
            threading.Thread(
                target=listener.serve_forever, kwargs={"poll_interval": 0.05}, name=f"hub-server-{listener.role}", daemon=True
            )
            for listener in (self._hub, self._storage)
        ]

    @property
    def url(self) -> str:
        return self._hub.url

    @property
    def storage_url(self) -> str:
        return self._storage.url

    def __enter__(self) -> HubServer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop both listeners and cut every open connection (idempotent)."""
        with self._lock:
            if self.dead:
                return
            self.dead = True
        for listener in (self._hub, self._storage):
            listener.shutdown()
            listener.server_close()
        for connection in list(self.connections):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed by its handler
                pass

    def lines(self) -> list[str]:
        return [request.line() for request in self.requests]

    # ------------------------------------------------------------------ request handling

    def handle(self, handler: _Handler, role: str, *, head: bool) -> None:
        url = urlsplit(handler.path)
        headers = {name: handler.headers[name] for name in LOGGED_HEADERS if handler.headers.get(name)}
        authorization = handler.headers.get("Authorization")
        if authorization:
            headers["Authorization"] = REDACTED
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        if role == "storage":
            status = self._storage_file(handler, segments, head)
        elif self._token is not None and authorization != f"Bearer {self._token}":
            status = self._error(handler, 401, "GatedRepo", "Access to this model is restricted. You must be authenticated to access it.", head)
        elif segments[:2] == ["api", "models"] and len(segments) >= 6 and segments[4] in ("revision", "tree"):
            status = self._api(handler, "/".join(segments[2:4]), segments[4], segments[5], query, head)
        elif len(segments) >= 5 and segments[2] == "resolve":
            status = self._resolve(handler, "/".join(segments[:2]), segments[3], "/".join(segments[4:]), head)
        else:
            status = self._error(handler, 404, None, "Not found", head)
        self.requests.append(LoggedRequest(role, handler.command, handler.path, status, headers))

    def _repo_commit(self, handler: _Handler, repo_id: str, revision: str, head: bool) -> tuple[HubCommit | None, int]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, self._error(handler, 404, "RepoNotFound", "Repository not found", head)
        commit = repo.resolve(revision)
        if commit is None:
            return None, self._error(handler, 404, "RevisionNotFound", "Invalid rev id: " + revision, head)
        return commit, 200

    def _api(self, handler: _Handler, repo_id: str, kind: str, revision: str, query: dict, head: bool) -> int:
        commit, status = self._repo_commit(handler, repo_id, revision, head)
        if commit is None:
            return status
        if kind == "tree":
            document: object = [entry for f in commit.files for entry in _tree_entries(f)]
        else:
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            document = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": "2024-01-01T00:00:00.000Z",
                "createdAt": "2023-01-01T00:00:00.000Z",
                "private": False,
                "gated": "manual" if self._token else False,
                "disabled": False,
                "tags": ["open_clip"],
                "siblings": [f.sibling(blobs) for f in commit.files],
            }
        return self._send(handler, 200, json.dumps(document).encode(), "application/json", {}, head)

    def _resolve(self, handler: _Handler, repo_id: str, revision: str, path: str, head: bool) -> int:
        commit, status = self._repo_commit(handler, repo_id, revision, head)
        if commit is None:
            return status
        hub_file = commit.file(path)
        extra = {"X-Repo-Commit": commit.sha}
        if hub_file is None:
            return self._error(handler, 404, "EntryNotFound", f"{path} does not exist on {revision!r}", head, extra)
        if not hub_file.lfs:
            extra["ETag"] = f'"{hub_file.blob_id}"'
            return self._send(handler, 200, hub_file.data, "application/octet-stream", extra, head)
        extra.update(
            {
                "ETag": f'"{hub_file.blob_id}"',
                "X-Linked-Etag": f'"{hub_file.sha256}"',
                "X-Linked-Size": str(len(hub_file.data)),
                "Location": f"{self.storage_url}/lfs/{hub_file.sha256}",
            }
        )
        return self._send(handler, 302, b"", "text/plain", extra, head)

    def _storage_file(self, handler: _Handler, segments: list[str], head: bool) -> int:
        hub_file = self._lfs_file(segments[1]) if len(segments) == 2 and segments[0] == "lfs" else None
        if hub_file is None:
            return self._send(handler, 404, b"NoSuchKey", "text/plain", {}, head)
        data = hub_file.data
        if hub_file.sha256 in self.corrupt:
            data = bytes(data[: len(data) // 2]) + bytes([data[len(data) // 2] ^ 0xFF]) + bytes(data[len(data) // 2 + 1 :])
        start = _range_start(handler.headers.get("Range"))
        extra = {"ETag": f'"{hub_file.sha256}"', "Accept-Ranges": "bytes"}
        status = 200
        if start:
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            status = 206
        die_after = self.die_after.get(hub_file.sha256)
        if die_after is not None and not head:
            self._send_then_die(handler, status, data[start:], extra, die_after)
            return status
        return self._send(handler, status, data[start:], "application/octet-stream", extra, head)

    def _lfs_file(self, sha256: str) -> HubFile | None:
        for repo in self.repos.values():
            for commit in repo.commits:
                for hub_file in commit.files:
                    if hub_file.lfs and hub_file.sha256 == sha256:
                        return hub_file
        return None

    def _send_then_die(self, handler: _Handler, status: int, body: bytes, extra: dict, sent: int) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body[:sent])
        handler.wfile.flush()
        self.stop()
        handler.close_connection = True

    def _error(self, handler: _Handler, status: int, code: str | None, message: str, head: bool, extra: dict | None = None) -> int:
        headers = dict(extra or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        return self._send(handler, status, json.dumps({"error": message}).encode(), "application/json", headers, head)

    @staticmethod
    def _send(handler: _Handler, status: int, body: bytes, content_type: str, extra: dict, head: bool) -> int:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)
        return status


def _tree_entries(hub_file: HubFile) -> list[dict]:
    """A file's tree entry, preceded by entries for the folders above it (a recursive listing has both)."""
    parts = hub_file.path.split("/")[:-1]
    folders = [
        {"type": "directory", "oid": git_blob_id("/".join(parts[: i + 1]).encode()), "size": 0, "path": "/".join(parts[: i + 1])}
        for i in range(len(parts))
    ]
    return [*folders, hub_file.tree_entry()]


def _range_start(value: str | None) -> int:
    """The first byte of a `Range: bytes=N-` request (the only form the client sends), else 0."""
    if not value or not value.startswith("bytes=") or not value.endswith("-"):
        return 0
    return int(value[len("bytes=") : -1] or 0)
