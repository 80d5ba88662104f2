"""A real Orthanc (Debian's package) for the DICOM node's tests: started on free loopback ports with a
configuration written here, driven through its REST API.

`./run test` installs Orthanc and DCMTK when they are missing; where the `Orthanc` binary is not on
PATH the tests that need it are skipped with that reason. Orthanc is built on DCMTK, which waits for
delayed TCP acknowledgements (about 40-50 ms per instance) unless `TCP_NODELAY=1` is in its
environment, so it is always started with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests.fixtures_node import free_port, wait_until

ORTHANC_BINARY = "Orthanc"
NOT_INSTALLED = "Orthanc is not installed (./run test installs it with: apt-get install orthanc dcmtk)"


class OrthancError(RuntimeError):
    """A REST call to the test Orthanc failed; the message has the method, path and answer."""


class Orthanc:
    """One Orthanc process with its own storage folder, HTTP port and DICOM port."""

    def __init__(self, root: Path, *, aet: str = "ORTHANC", modalities: dict[str, tuple[str, str, int]] | None = None):
        self.root = Path(root)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.modalities = dict(modalities or {})
        self.process: subprocess.Popen | None = None
        self.log_path = self.root / "orthanc.log"

    # ----------------------------------------------------------------------- process

    def write_config(self) -> Path:
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "biomedclip-map test PACS",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomCheckModalityHost": False,
            "DicomAssociationCloseDelay": 0,
            "DicomScuTimeout": 10,
            "DicomModalities": {name: list(entry) for name, entry in self.modalities.items()},
            "ConcurrentJobs": 4,
            "SaveJobs": False,
            "Plugins": [],
            "SyncStorageArea": False,
            "StableAge": 3600,
            "HttpTimeout": 60,
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config, indent=1), encoding="utf-8")
        return path

    def start(self) -> "Orthanc":
        if shutil.which(ORTHANC_BINARY) is None:
            pytest.skip(NOT_INSTALLED)
        config = self.write_config()
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([ORTHANC_BINARY, str(config)], stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: self._up() or self.process.poll() is not None, 30, "Orthanc to start")
        if self.process.poll() is not None:
            pytest.fail(f"Orthanc exited with {self.process.returncode}:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        return self

    def _up(self) -> bool:
        try:
            self.get("/system")
            return True
        except (OrthancError, OSError):
            return False

    def stop(self) -> None:
        """Stop Orthanc (its storage stays, so `start()` brings the same PACS back)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """Take Orthanc down at once (SIGKILL), as a crashed or unplugged PACS; `start()` brings it back.

        A graceful stop lets Orthanc accept associations for a second or more while it shuts
        down, which would make "the destination is down" a race in a test.
        """
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    # ----------------------------------------------------------------------- REST

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json", timeout: float = 60):
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise OrthancError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc
        except urllib.error.URLError as exc:
            raise OrthancError(f"{method} {path}: {exc.reason}") from exc
        return json.loads(data) if data else None

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, document: object, timeout: float = 60):
        return self._request("POST", path, json.dumps(document).encode("utf-8"), timeout=timeout)

    def upload(self, files: Iterable[Path]) -> str:
        """Store files through REST (`POST /instances`); return the Orthanc ID of their study."""
        study = None
        for path in files:
            answer = self._request("POST", "/instances", Path(path).read_bytes(), "application/dicom")
            study = answer["ParentStudy"]
        assert study is not None, "no file uploaded"
        return study

    def store_to(self, modality: str, resources: list[str], *, synchronous: bool = True, timeout: float = 120) -> dict:
        """`POST /modalities/{modality}/store`: Orthanc C-STOREs the resources to that modality."""
        return self.post(
            f"/modalities/{modality}/store",
            {"Resources": resources, "Synchronous": synchronous, "Timeout": int(timeout)},
            timeout=timeout + 10,
        )

    def job(self, job_id: str) -> dict:
        return self.get(f"/jobs/{job_id}")

    def echo(self, modality: str) -> bool:
        try:
            self.post(f"/modalities/{modality}/echo", {"Timeout": 10}, timeout=20)
            return True
        except OrthancError:
            return False

    def instances_of_study(self, study_instance_uid: str) -> list[dict]:
        """Every instance Orthanc holds in that study, as simplified tags."""
        found = self.post("/tools/find", {"Level": "Instance", "Query": {"StudyInstanceUID": study_instance_uid}})
        return [self.get(f"/instances/{orthanc_id}/simplified-tags") for orthanc_id in found]

    def of_modality(self, study_instance_uid: str, modality: str) -> list[dict]:
        return [tags for tags in self.instances_of_study(study_instance_uid) if tags.get("Modality") == modality]


@pytest.fixture
def orthanc_factory(tmp_path) -> Iterator:
    """Makes Orthanc servers (`factory(modalities=...)`, not yet started); all stopped after the test."""
    servers: list[Orthanc] = []

    def factory(**kwargs) -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc-{len(servers)}", **kwargs)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


def wait_for_instances(orthanc: Orthanc, study_uid: str, modality: str, count: int, timeout: float) -> list[dict]:
    """Wait until Orthanc holds `count` instances of `modality` in the study; return them."""
    return wait_until(
        lambda: (found if len(found := orthanc.of_modality(study_uid, modality)) >= count else None),
        timeout,
        f"{count} {modality} instance(s) in Orthanc",
        interval=0.2,
    )


def settle(seconds: float) -> None:
    """Wait, on purpose: used only to show that nothing more arrives afterwards."""
    time.sleep(seconds)
