"""A minimal KServe-v2-protocol (Triton HTTP/REST) inference server for tests, on 127.0.0.1 only.

It serves a Triton model repository written by `python -m engines triton-repo` the way Triton's
ONNX Runtime backend would: each model folder's `config.pbtxt` (parsed with Triton's protobuf
schema) and `1/model.onnx` run by ONNX Runtime on CPU. It implements what the product's client
uses: server liveness, model readiness, model metadata, the model configuration (Triton's
extension), and inference with JSON tensors or Triton's binary tensor extension. It is not a
general server: no dynamic batching, no versions beyond the newest, no model control.

Faults can be injected to test the client's error handling: `fail_requests_after(n)` makes every
inference request after the n-th answer HTTP 500.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from engines.triton_repository import CONFIG_FILE, MODEL_FILE, MODEL_VERSION_DIR, read_config

_DTYPES = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32}
_CONFIG_TYPES = {"TYPE_FP32": "FP32", "TYPE_INT64": "INT64", "TYPE_INT32": "INT32", "TYPE_FP64": "FP64"}
_MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/config|/infer)?$")
HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class ServedModel:
    """One model of the repository: its configuration (as a protobuf and as Triton's JSON) and its session."""

    name: str
    config: object
    config_json: dict
    session: object

    def metadata(self) -> dict:
        def tensors(items) -> list[dict]:
            batch = [-1] if self.config.max_batch_size > 0 else []
            return [
                {"name": t.name, "datatype": _type_name(t.data_type), "shape": batch + list(t.dims)}
                for t in items
            ]

        return {
            "name": self.name,
            "versions": [MODEL_VERSION_DIR],
            "platform": self.config.platform,
            "inputs": tensors(self.config.input),
            "outputs": tensors(self.config.output),
        }


def _type_name(data_type: int) -> str:
    from tritonclient.grpc import model_config_pb2 as pb

    return _CONFIG_TYPES[pb.DataType.Name(data_type)]


def load_repository(repository: Path) -> dict[str, ServedModel]:
    """Every model folder of `repository`, with its ONNX graph opened by ONNX Runtime on CPU."""
    import onnxruntime as ort
    from google.protobuf import json_format

    models = {}
    for folder in sorted(p for p in Path(repository).iterdir() if (p / CONFIG_FILE).is_file()):
        config = read_config(folder / CONFIG_FILE)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(folder / MODEL_VERSION_DIR / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        config_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
        models[config.name or folder.name] = ServedModel(config.name or folder.name, config, config_json, session)
    return models


@dataclass
class ServerState:
    """What the handler threads share: the models, counters and injected faults."""

    models: dict[str, ServedModel]
    infer_requests: int = 0
    fail_after: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class KServeV2Handler(BaseHTTPRequestHandler):
    """Answers the KServe v2 REST endpoints the product's client calls."""

    protocol_version = "HTTP/1.1"
    server: "KServeV2Server"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        """Quiet: the tests read results, not access logs."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json", headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, document: dict) -> None:
        self._send(status, json.dumps(document).encode())

    def _error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        if self.path in ("/v2/health/live", "/v2/health/ready"):
            self._send(200, b"")
            return
        match = _MODEL_PATH.match(self.path.split("?")[0])
        if not match or match["name"] not in state.models:
            self._error(404, f"unknown endpoint or model: {self.path}")
            return
        model = state.models[match["name"]]
        rest = match["rest"]
        if rest == "/ready":
            self._send(200, b"")
        elif rest == "/config":
            self._send_json(200, model.config_json)
        elif rest is None:
            self._send_json(200, model.metadata())
        else:
            self._error(405, f"{self.path} expects POST")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        match = _MODEL_PATH.match(self.path.split("?")[0])
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if not match or match["rest"] != "/infer" or match["name"] not in state.models:
            self._error(404, f"unknown endpoint or model: {self.path}")
            return
        with state.lock:
            state.infer_requests += 1
            failing = state.fail_after is not None and state.infer_requests > state.fail_after
        if failing:
            self._error(500, "injected failure: the inference server is out of service")
            return
        try:
            self._infer(state.models[match["name"]], body)
        except (KeyError, ValueError) as exc:
            self._error(400, f"bad inference request: {exc}")

    def _infer(self, model: ServedModel, body: bytes) -> None:
        header_length = self.headers.get(HEADER_LENGTH)
        split = int(header_length) if header_length is not None else len(body)
        request = json.loads(body[:split])
        binary = body[split:]
        feeds, offset = {}, 0
        for tensor in request["inputs"]:
            dtype = _DTYPES[tensor["datatype"]]
            shape = [int(d) for d in tensor["shape"]]
            size = (tensor.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                array = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
                offset += size
            else:
                array = np.asarray(tensor["data"], dtype=dtype).reshape(shape)
            feeds[tensor["name"]] = array
        requested = request.get("outputs") or [{"name": o.name} for o in model.config.output]
        results = model.session.run([o["name"] for o in requested], feeds)
        binary_all = bool((request.get("parameters") or {}).get("binary_data_output"))
        outputs, chunks = [], []
        for spec, array in zip(requested, results):
            array = np.ascontiguousarray(array)
            entry = {"name": spec["name"], "datatype": _type_of(array), "shape": list(array.shape)}
            if binary_all or (spec.get("parameters") or {}).get("binary_data"):
                raw = array.tobytes()
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = array.reshape(-1).tolist()
            outputs.append(entry)
        header = json.dumps({"model_name": model.name, "model_version": MODEL_VERSION_DIR, "outputs": outputs}).encode()
        if chunks:
            self._send(200, header + b"".join(chunks), "application/octet-stream", {HEADER_LENGTH: len(header)})
        else:
            self._send(200, header)


def _type_of(array: np.ndarray) -> str:
    for name, dtype in _DTYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"unsupported output type {array.dtype}")


class KServeV2Server(ThreadingHTTPServer):
    """The server, bound to 127.0.0.1 on a free port, serving from a background thread."""

    daemon_threads = True

    def __init__(self, repository: Path) -> None:
        self.state = ServerState(load_repository(repository))
        self._connections: set = set()
        self.handler_errors: list[str] = []
        super().__init__(("127.0.0.1", 0), KServeV2Handler)
        self._thread = threading.Thread(target=self.serve_forever, name="kserve-v2-test-server", daemon=True)

    def process_request(self, request, client_address) -> None:
        """Remember each client connection so that `stop()` can cut kept-alive ones too."""
        with self.state.lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self.state.lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """Record a handler failure (a client that hung up, say) instead of printing a traceback."""
        import sys

        self.handler_errors.append(f"{sys.exc_info()[0].__name__}: {sys.exc_info()[1]}")

    @property
    def netloc(self) -> str:
        """`host:port` as TRITON_SERVER_NETLOC takes it."""
        host, port = self.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> "KServeV2Server":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down like a crashed server: stop listening and cut open connections (later requests are refused)."""
        import socket

        self.shutdown()
        self.server_close()
        with self.state.lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client: nothing left to cut
        self._thread.join(timeout=10)

    def fail_requests_after(self, count: int | None) -> None:
        """Answer every inference request after the `count`-th with HTTP 500 (None: never)."""
        with self.state.lock:
            self.state.fail_after = None if count is None else self.state.infer_requests + count

    @property
    def infer_requests(self) -> int:
        with self.state.lock:
            return self.state.infer_requests
