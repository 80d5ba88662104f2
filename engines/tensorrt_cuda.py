"""CUDA device memory, pinned host buffers and streams for the TensorRT backend (no pycuda needed).

Two providers give the same small interface (`CudaRuntime`): NVIDIA's cuda-python bindings
(`cuda.bindings.runtime`, installed with torch's CUDA wheels; `cuda.cudart` in older releases),
preferred because they are light, and torch's CUDA allocator as the fallback. Importing this module
imports neither; `open_cuda_runtime()` does, and raises `CudaUnavailable` with the reason when no
CUDA device can be used (no bindings, no driver, no GPU), which the backend reports in one line.

Allocation failures are `CudaOutOfMemory`, so callers can shrink their largest batch instead of
failing a study.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class CudaUnavailable(RuntimeError):
    """No usable CUDA device or runtime; the message says which is missing."""


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's own error text."""


class CudaOutOfMemory(CudaError):
    """The GPU (or pinned host memory) has not enough free memory for an allocation."""


@dataclass(frozen=True)
class DeviceInfo:
    """The identity of a GPU as far as TensorRT engines care: its name and compute capability."""

    index: int
    name: str
    compute_capability: str
    """'major.minor', e.g. '9.0' for H100/H200."""
    total_memory: int


class DeviceBuffer(Protocol):
    ptr: int
    nbytes: int

    def free(self) -> None: ...


class PinnedArray(Protocol):
    array: np.ndarray
    """A numpy view of page-locked host memory (asynchronous copies need it)."""
    ptr: int

    def free(self) -> None: ...


class Stream(Protocol):
    handle: int

    def synchronize(self) -> None: ...

    def destroy(self) -> None: ...


class CudaRuntime(Protocol):
    """What the TensorRT backend needs from CUDA."""

    provider: str

    def device_info(self) -> DeviceInfo: ...

    def malloc(self, nbytes: int) -> DeviceBuffer: ...

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> PinnedArray: ...

    def stream(self) -> Stream: ...

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: Stream) -> None: ...

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: Stream) -> None: ...


# --------------------------------------------------------------------------- cuda-python


def _import_cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6 and later
    except ImportError:
        from cuda import cudart  # older cuda-python releases
    return cudart


@dataclass
class _CpDeviceBuffer:
    runtime: "CudaPythonRuntime"
    ptr: int
    nbytes: int

    def free(self) -> None:
        if self.ptr:
            self.runtime._call("cudaFree", self.runtime.cudart.cudaFree(self.ptr))
            self.ptr = 0


@dataclass
class _CpPinned:
    runtime: "CudaPythonRuntime"
    ptr: int
    array: np.ndarray

    def free(self) -> None:
        if self.ptr:
            self.array = np.empty(0, dtype=self.array.dtype)
            self.runtime._call("cudaFreeHost", self.runtime.cudart.cudaFreeHost(self.ptr))
            self.ptr = 0


@dataclass
class _CpStream:
    runtime: "CudaPythonRuntime"
    raw: object

    @property
    def handle(self) -> int:
        return int(self.raw)

    def synchronize(self) -> None:
        self.runtime._call("cudaStreamSynchronize", self.runtime.cudart.cudaStreamSynchronize(self.raw))

    def destroy(self) -> None:
        if self.raw is not None:
            self.runtime._call("cudaStreamDestroy", self.runtime.cudart.cudaStreamDestroy(self.raw))
            self.raw = None


class CudaPythonRuntime:
    """CUDA through NVIDIA's cuda-python runtime bindings."""

    provider = "cuda-python"

    def __init__(self, device: int = 0) -> None:
        try:
            self.cudart = _import_cudart()
        except ImportError as exc:
            raise CudaUnavailable(f"cuda-python is not installed ({exc})") from exc
        err, count = self.cudart.cudaGetDeviceCount()
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise CudaUnavailable(f"no usable CUDA device ({self._error_text(err)})")
        if count <= device:
            raise CudaUnavailable(f"no CUDA device {device} (found {count})")
        self.device = device
        self._call("cudaSetDevice", self.cudart.cudaSetDevice(device))

    def _error_text(self, err) -> str:
        _, text = self.cudart.cudaGetErrorString(err)
        return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)

    def _call(self, name: str, result):
        """Check a cuda-python result tuple `(err, *values)`; returns the values (or the one value)."""
        if not isinstance(result, tuple):
            result = (result,)
        err, values = result[0], result[1:]
        if err != self.cudart.cudaError_t.cudaSuccess:
            message = f"{name} failed: {self._error_text(err)}"
            if err == self.cudart.cudaError_t.cudaErrorMemoryAllocation:
                raise CudaOutOfMemory(message)
            raise CudaError(message)
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def device_info(self) -> DeviceInfo:
        props = self._call("cudaGetDeviceProperties", self.cudart.cudaGetDeviceProperties(self.device))
        name = props.name.decode("utf-8", "replace") if isinstance(props.name, bytes) else str(props.name)
        return DeviceInfo(self.device, name.strip("\x00 ").strip(), f"{props.major}.{props.minor}", int(props.totalGlobalMem))

    def malloc(self, nbytes: int) -> _CpDeviceBuffer:
        return _CpDeviceBuffer(self, int(self._call("cudaMalloc", self.cudart.cudaMalloc(max(int(nbytes), 1)))), int(nbytes))

    def pinned(self, shape: tuple[int, ...], dtype) -> _CpPinned:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        ptr = int(self._call("cudaMallocHost", self.cudart.cudaMallocHost(max(nbytes, 1))))
        raw = (ctypes.c_byte * max(nbytes, 1)).from_address(ptr)
        return _CpPinned(self, ptr, np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape))

    def stream(self) -> _CpStream:
        return _CpStream(self, self._call("cudaStreamCreate", self.cudart.cudaStreamCreate()))

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: _CpStream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.raw))

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: _CpStream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", self.cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream.raw))


# --------------------------------------------------------------------------- torch


@dataclass
class _TorchDeviceBuffer:
    runtime: "TorchCudaRuntime"
    tensor: object
    ptr: int
    nbytes: int

    def free(self) -> None:
        self.runtime._allocations.pop(self.ptr, None)
        self.tensor = None
        self.ptr = 0


@dataclass
class _TorchPinned:
    runtime: "TorchCudaRuntime"
    tensor: object
    array: np.ndarray
    ptr: int

    def free(self) -> None:
        self.runtime._allocations.pop(self.ptr, None)
        self.tensor = None
        self.array = np.empty(0, dtype=self.array.dtype)
        self.ptr = 0


@dataclass
class _TorchStream:
    raw: object

    @property
    def handle(self) -> int:
        return int(self.raw.cuda_stream)

    def synchronize(self) -> None:
        self.raw.synchronize()

    def destroy(self) -> None:
        self.raw = None


class TorchCudaRuntime:
    """CUDA through torch's allocator and streams (used when cuda-python is missing)."""

    provider = "torch"

    def __init__(self, device: int = 0) -> None:
        try:
            import torch
        except ImportError as exc:
            raise CudaUnavailable(f"neither cuda-python nor torch is installed ({exc})") from exc
        if not torch.cuda.is_available():
            raise CudaUnavailable("torch sees no CUDA device")
        self.torch = torch
        self.device = torch.device("cuda", device)
        self._allocations: dict[int, object] = {}
        """Base address -> the uint8 tensor that owns it (copies are tensor copies on the stream)."""

    def _oom(self, what: str, exc: Exception) -> CudaError:
        text = str(exc)
        return CudaOutOfMemory(f"{what}: {text}") if "out of memory" in text.lower() else CudaError(f"{what}: {text}")

    def device_info(self) -> DeviceInfo:
        props = self.torch.cuda.get_device_properties(self.device)
        return DeviceInfo(self.device.index or 0, props.name, f"{props.major}.{props.minor}", int(props.total_memory))

    def malloc(self, nbytes: int) -> _TorchDeviceBuffer:
        try:
            tensor = self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device=self.device)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            raise self._oom("device allocation", exc) from exc
        self._allocations[int(tensor.data_ptr())] = tensor
        return _TorchDeviceBuffer(self, tensor, int(tensor.data_ptr()), int(nbytes))

    def pinned(self, shape: tuple[int, ...], dtype) -> _TorchPinned:
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        try:
            tensor = self.torch.empty(max(count * dtype.itemsize, 1), dtype=self.torch.uint8, pin_memory=True)
        except RuntimeError as exc:
            raise self._oom("pinned host allocation", exc) from exc
        array = tensor.numpy()[: count * dtype.itemsize].view(dtype).reshape(shape)
        self._allocations[int(tensor.data_ptr())] = tensor
        return _TorchPinned(self, tensor, array, int(tensor.data_ptr()))

    def stream(self) -> _TorchStream:
        return _TorchStream(self.torch.cuda.Stream(device=self.device))

    def _tensor(self, ptr: int):
        tensor = self._allocations.get(ptr)
        if tensor is None:
            raise CudaError(f"address {ptr:#x} was not allocated by this runtime")
        return tensor

    def _copy(self, dst: int, src: int, nbytes: int, stream: _TorchStream) -> None:
        with self.torch.cuda.stream(stream.raw):
            self._tensor(dst)[:nbytes].copy_(self._tensor(src)[:nbytes], non_blocking=True)

    def copy_to_device(self, dst: int, src: int, nbytes: int, stream: _TorchStream) -> None:
        self._copy(dst, src, nbytes, stream)

    def copy_to_host(self, dst: int, src: int, nbytes: int, stream: _TorchStream) -> None:
        self._copy(dst, src, nbytes, stream)


def open_cuda_runtime(device: int = 0) -> CudaRuntime:
    """cuda-python if it can see a device, else torch's CUDA; raises CudaUnavailable with both reasons."""
    try:
        return CudaPythonRuntime(device)
    except CudaUnavailable as first:
        try:
            return TorchCudaRuntime(device)
        except CudaUnavailable as second:
            raise CudaUnavailable(f"{first}; {second}") from second
