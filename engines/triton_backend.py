"""The remote backend: the image and text towers served by a Triton Inference Server (KServe v2 over HTTP).

When `TRITON_SERVER_NETLOC` is set (the MONAI Deploy SDK's convention; also the `-t` /
`--triton-server-netloc` flag; app/settings.py resolves both into `EngineSettings`, and this
module reads no environment), the MAP does not load the towers itself: it sends the image and
token batches to the server, so many MAP containers share a few GPU servers. The server runs the
repository written by `python -m app.engine_commands triton-repo` (engines/triton_repository.py).

Before the first request the backend checks that the server is live, that both encoders are
ready, and that the weights sha256 in their configuration equals the local model folder's: the
report names the local model, so the server must run exactly those weights. The local model
folder is still opened (manifest, tokenizer, image mean/std, the logit scale), but no runtime
session is created.

Failures:
- at start (server unreachable, model not ready, different weights): `TritonUnavailable`, a
  `BackendUnavailable`, so the run stops with exit status 2 and a message naming the server;
- during a study (connection lost, server error): `TritonInferenceError`; the study fails, no
  report is written for it, and the run's exit status is 1.
With `BIOMEDCLIP_MAP_TRITON_FALLBACK=local` (or `--triton-fallback local`) both cases continue on
local inference instead, with one warning line; after a failure mid-run the rest of the run stays
local (no flapping between the server and the local model within one study).

tritonclient's HTTP client is built on gevent, whose connections and event loop belong to the
thread that made them, and Holoscan calls operators from its own scheduler thread. So every
request runs on one thread owned by the backend (`ClientThread`), which creates, uses and closes
the client and destroys its gevent hub before it ends (a hub left behind crashes the interpreter
when its thread exits).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from engines.base import DEFAULT_TRITON_TIMEOUT_S, BackendConfigError, BackendUnavailable, InferenceBackend
from engines.onnx_export import IMAGE_INPUT, IMAGE_OUTPUT, TEXT_INPUTS, TEXT_OUTPUT
from engines.triton_repository import IMAGE_MODEL, PARAM_WEIGHTS_SHA256, TEXT_MODEL
from models.directory import ModelDirectory

log = logging.getLogger(__name__)

TRITON_NETLOC_ENV = "TRITON_SERVER_NETLOC"
TRITON_FALLBACK_ENV = "BIOMEDCLIP_MAP_TRITON_FALLBACK"
"""Names of the run settings (read by app/settings.py) that messages tell an administrator to set."""
CONNECT_TIMEOUT_S = 10.0


class TritonUnavailable(BackendUnavailable):
    """The Triton server cannot be used for this model (unreachable, not ready, other weights)."""


class TritonInferenceError(RuntimeError):
    """A request to the Triton server failed during a run; the message names the server and the model."""


class TritonConfigError(BackendConfigError):
    """A Triton setting (server address, fallback, timeout) is malformed; the message names the setting."""


@dataclass(frozen=True)
class TritonTarget:
    """Where the server is: `host:port` as tritonclient takes it, and whether to use HTTPS."""

    netloc: str
    ssl: bool = False

    @property
    def display(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{self.netloc}"


def parse_triton_target(value: str, origin: str = TRITON_NETLOC_ENV) -> TritonTarget:
    """`host:port`, `http://host:port` or `https://host:port` -> TritonTarget; TritonConfigError otherwise."""
    text = (value or "").strip()
    ssl = False
    for scheme, secure in (("https://", True), ("http://", False)):
        if text.lower().startswith(scheme):
            text, ssl = text[len(scheme) :], secure
    text = text.rstrip("/")
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in text:
        raise TritonConfigError(
            f"{origin}={value!r} is not a Triton server address; expected host:port, e.g. triton.example.org:8000 "
            "(the server's HTTP port, 8000 by default)"
        )
    return TritonTarget(text, ssl)


def _remote_errors() -> tuple[type[BaseException], ...]:
    """What a failed request raises: the server's error answer, or the network layer's errors."""
    from tritonclient.utils import InferenceServerException

    return (InferenceServerException, OSError)


class ClientThread:
    """One daemon thread that owns a gevent-based client: creates it, runs every call with it, then closes it.

    `call(function, *args)` runs `function(client, *args)` on the thread and returns its result or
    raises its exception. The thread ends after `close()`, or when its owner is garbage-collected
    (the owner registers `close` with `weakref.finalize`); either way it closes the client and
    destroys its gevent hub itself.
    """

    def __init__(self, make_client: Callable[[], object], name: str = "triton-client") -> None:
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=ClientThread._serve, args=(self._requests, make_client), name=name, daemon=True)
        self._thread.start()

    @staticmethod
    def _serve(requests: queue.SimpleQueue, make_client: Callable[[], object]) -> None:
        # A static method: the running thread must not keep its owner alive.
        client = None
        try:
            while (item := requests.get()) is not None:
                function, args, future = item
                item = None
                if future.set_running_or_notify_cancel():
                    try:
                        if client is None:
                            client = make_client()
                        future.set_result(function(client, *args))
                    except BaseException as exc:  # handed to the caller, who raises it
                        future.set_exception(exc)
                function = args = future = None
        finally:
            if client is not None:
                client.close()
            from gevent._hub_local import get_hub_if_exists

            hub = get_hub_if_exists()
            if hub is not None:
                hub.destroy(destroy_loop=True)

    def call(self, function: Callable, *args):
        """Run `function(client, *args)` on the client's thread; return its result or raise its error."""
        if not self._thread.is_alive():
            raise TritonInferenceError("the Triton client has been closed")
        future: Future = Future()
        self._requests.put((function, args, future))
        return future.result()

    def close(self, timeout_s: float = 30.0) -> None:
        """Let the thread close the client and its hub, and wait for it to end."""
        self._requests.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)


class TritonBackend(InferenceBackend):
    """Both towers on a Triton server; `name` is `triton-<platform>` (e.g. `triton-onnxruntime`)."""

    def __init__(
        self,
        model: ModelDirectory,
        target: TritonTarget,
        *,
        timeout_s: float = DEFAULT_TRITON_TIMEOUT_S,
        open_fallback: Callable[[], InferenceBackend] | None = None,
    ) -> None:
        super().__init__(model)
        try:
            import tritonclient.http as http
        except ImportError as exc:
            raise TritonUnavailable(f"tritonclient is not installed ({exc}); install the pinned requirements") from exc
        from engines.onnxruntime_backend import read_logit_scale

        self.target = target
        self.timeout_s = timeout_s
        self._open_fallback = open_fallback
        self._fallback: InferenceBackend | None = None
        self._fallback_lock = threading.Lock()
        self._client_thread = ClientThread(
            functools.partial(
                http.InferenceServerClient,
                target.netloc,
                ssl=target.ssl,
                connection_timeout=min(CONNECT_TIMEOUT_S, timeout_s),
                network_timeout=timeout_s,
            )
        )
        self._finalizer = weakref.finalize(self, self._client_thread.close)
        self._expected_sha256 = model.sha256
        self.max_batch: dict[str, int] = {}
        try:
            platforms = {self._client_thread.call(self._check_model, name) for name in (IMAGE_MODEL, TEXT_MODEL)}
        except BaseException:
            self._finalizer()
            raise
        platform = sorted(platforms)[0]
        self.name = "triton-" + platform.split("_")[0]
        self.logit_scale = read_logit_scale(model.weights_path)

    def _check_model(self, client, name: str) -> str:
        """Check `name` is ready on the server and runs the local weights; returns its platform (client thread)."""
        where = f"Triton server {self.target.display}"
        try:
            if not client.is_server_live():
                raise TritonUnavailable(f"{where} answers but is not live")
            if not client.is_model_ready(name):
                raise TritonUnavailable(
                    f"{where} does not have model {name!r} ready; load the repository written by "
                    "`python -m app.engine_commands triton-repo` (tritonserver --model-repository ...)"
                )
            config = client.get_model_config(name)
        except _remote_errors() as exc:
            raise TritonUnavailable(f"{where} cannot be reached or answered with an error: {type(exc).__name__}: {exc}") from exc
        served = ((config.get("parameters") or {}).get(PARAM_WEIGHTS_SHA256) or {}).get("string_value")
        if served != self._expected_sha256:
            raise TritonUnavailable(
                f"{where} serves {name!r} with weights sha256 {served or '(not stated)'}, but the local model folder "
                f"holds {self._expected_sha256}; export the repository from this model folder "
                "(`python -m app.engine_commands triton-repo`) so the report names the model that computed it"
            )
        self.max_batch[name] = max(1, int(config.get("max_batch_size") or 1))
        return str(config.get("platform") or config.get("backend") or "unknown")

    def _infer(self, client, model_name: str, inputs: Mapping[str, np.ndarray], output: str) -> np.ndarray:
        """One batch through `model_name` on the server, split into the server's max_batch_size (client thread)."""
        import tritonclient.http as http
        from tritonclient.utils import np_to_triton_dtype

        count = next(iter(inputs.values())).shape[0]
        step = self.max_batch[model_name]
        parts = []
        for start in range(0, count, step):
            request = []
            for name, array in inputs.items():
                chunk = np.ascontiguousarray(array[start : start + step])
                tensor = http.InferInput(name, list(chunk.shape), np_to_triton_dtype(chunk.dtype))
                tensor.set_data_from_numpy(chunk, binary_data=True)
                request.append(tensor)
            result = client.infer(model_name, request, outputs=[http.InferRequestedOutput(output, binary_data=True)])
            embeddings = result.as_numpy(output)
            expected = (min(step, count - start), self.embed_dim)
            if embeddings is None or tuple(embeddings.shape) != expected:
                got = None if embeddings is None else tuple(embeddings.shape)
                raise TritonInferenceError(
                    f"Triton server {self.target.display} returned {output} of shape {got} from {model_name!r}, expected {expected}"
                )
            parts.append(np.asarray(embeddings, dtype=np.float32))
        return np.concatenate(parts, axis=0)

    def _remote_or_fallback(self, what: str, remote: Callable[[], np.ndarray], local: Callable[[InferenceBackend], np.ndarray]) -> np.ndarray:
        """Run `remote`; on a server failure, fall back to local inference if configured, else raise TritonInferenceError."""
        if self._fallback is not None:
            return local(self._fallback)
        try:
            return remote()
        except _remote_errors() + (TritonInferenceError,) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            failure = f"Triton server {self.target.display} failed while embedding {what}: {reason}"
            if self._open_fallback is None:
                raise TritonInferenceError(
                    f"{failure}. Nothing was written for this study; retry when the server is back, or set "
                    f"{TRITON_FALLBACK_ENV}=local to fall back to local inference"
                ) from exc
            fallback = self._activate_fallback(failure)
        return local(fallback)

    def _activate_fallback(self, failure: str) -> InferenceBackend:
        with self._fallback_lock:
            if self._fallback is None:
                log.warning("%s; falling back to local inference for the rest of this run", failure)
                try:
                    self._fallback = self._open_fallback()
                except BackendUnavailable as exc:
                    raise TritonInferenceError(f"{failure}, and local inference cannot be used either: {exc}") from exc
                self.name = f"{self._fallback.name} (fallback from {self.name})"
            return self._fallback

    def _encode_images(self, images: np.ndarray) -> np.ndarray:
        return self._remote_or_fallback(
            f"{len(images)} image(s) with {IMAGE_MODEL!r}",
            lambda: self._client_thread.call(self._infer, IMAGE_MODEL, {IMAGE_INPUT: images}, IMAGE_OUTPUT),
            lambda local: local.encode_images(images),
        )

    def _encode_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self._remote_or_fallback(
            f"{len(input_ids)} prompt(s) with {TEXT_MODEL!r}",
            lambda: self._client_thread.call(self._infer, TEXT_MODEL, {TEXT_INPUTS[0]: input_ids, TEXT_INPUTS[1]: attention_mask}, TEXT_OUTPUT),
            lambda local: local.encode_texts(input_ids, attention_mask),
        )

    def close(self) -> None:
        self._finalizer()
        if self._fallback is not None:
            self._fallback.close()


def open_triton_backend(
    model: ModelDirectory,
    netloc: str,
    *,
    open_local: Callable[[], InferenceBackend],
    fallback: bool = False,
    timeout_s: float = DEFAULT_TRITON_TIMEOUT_S,
) -> InferenceBackend:
    """The Triton backend for `netloc`, or the local backend when the server is unusable and fallback is on.

    `open_local` opens the backend local selection would choose; it is called only when needed.
    Raises TritonConfigError for malformed settings and TritonUnavailable when the server cannot be
    used and fallback is off.
    """
    target = parse_triton_target(netloc)
    use_fallback = bool(fallback)
    try:
        backend = TritonBackend(model, target, timeout_s=timeout_s, open_fallback=open_local if use_fallback else None)
    except TritonUnavailable as exc:
        if not use_fallback:
            raise TritonUnavailable(
                f"{exc} (inference goes to the server because {TRITON_NETLOC_ENV} or --triton-server-netloc is set; "
                f"set {TRITON_FALLBACK_ENV}=local to fall back to local inference)"
            ) from exc
        log.warning("%s; falling back to local inference", exc)
        return open_local()
    log.info("inference on Triton server %s (%s)", target.display, backend.name)
    return backend
