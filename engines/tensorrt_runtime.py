"""Running one TensorRT engine: execution context, pinned host buffers, device buffers, one CUDA stream.

`TowerRunner` owns everything one tower needs. Buffers are allocated once for the engine's
largest batch (and longest sequence); each call copies the inputs into page-locked host memory,
copies them to the GPU asynchronously on the runner's stream, runs `execute_async_v3` on the same
stream, copies the output back asynchronously and synchronises once. Batches larger than the
engine's largest batch are split (`batch_slices`). If the GPU cannot hold the buffers for the
largest batch, smaller ones are allocated and batches are split accordingly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from engines.tensorrt_cuda import CudaOutOfMemory, CudaRuntime

log = logging.getLogger(__name__)


class TensorRTExecutionError(RuntimeError):
    """TensorRT failed to run a batch; the message names the tower and the shapes."""


class ContextOutOfMemory(RuntimeError):
    """TensorRT could not create an execution context (its activation memory) for the largest profile."""


def batch_slices(total: int, max_batch: int) -> list[slice]:
    """Consecutive slices of at most `max_batch` items covering `total` items."""
    if max_batch < 1:
        raise ValueError(f"the largest batch must be at least 1, got {max_batch}")
    return [slice(start, min(start + max_batch, total)) for start in range(0, total, max_batch)]


@dataclass
class _Binding:
    name: str
    dtype: np.dtype
    max_shape: tuple[int, ...]
    host: object = None
    device: object = None


class TowerRunner:
    """One deserialized engine with its context, stream and buffers; `run` maps named inputs to the output."""

    def __init__(self, trt, engine, cuda: CudaRuntime, tower: str, max_batch: int) -> None:
        self.trt = trt
        self.engine = engine
        self.cuda = cuda
        self.tower = tower
        context = engine.create_execution_context()
        if context is None:
            raise ContextOutOfMemory(f"TensorRT could not create an execution context for the {tower} engine (GPU memory)")
        self.context = context
        self.inputs: list[_Binding] = []
        self.output: _Binding | None = None
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                largest = tuple(int(v) for v in engine.get_tensor_profile_shape(name, 0)[2])
                self.inputs.append(_Binding(name, dtype, largest))
            else:
                shape = tuple(int(v) for v in engine.get_tensor_shape(name))
                self.output = _Binding(name, dtype, shape)
        if self.output is None or not self.inputs:
            raise TensorRTExecutionError(f"the {tower} engine has no inputs or no output")
        self.stream = cuda.stream()
        self.max_batch = max(1, min(max_batch, min(b.max_shape[0] for b in self.inputs)))
        self._allocate()

    def _allocate(self) -> None:
        """Buffers for `max_batch`; on GPU out-of-memory, halve the batch until they fit."""
        while True:
            try:
                for binding in self.inputs:
                    shape = (self.max_batch, *binding.max_shape[1:])
                    binding.host = self.cuda.pinned(shape, binding.dtype)
                    binding.device = self.cuda.malloc(int(np.prod(shape)) * binding.dtype.itemsize)
                out_shape = (self.max_batch, *(d if d > 0 else 1 for d in self.output.max_shape[1:]))
                self.output.host = self.cuda.pinned(out_shape, self.output.dtype)
                self.output.device = self.cuda.malloc(int(np.prod(out_shape)) * self.output.dtype.itemsize)
                return
            except CudaOutOfMemory as exc:
                self._free_buffers()
                if self.max_batch == 1:
                    raise
                log.warning(
                    "GPU out of memory for %s buffers of %d images (%s); using batches of %d",
                    self.tower, self.max_batch, exc, self.max_batch // 2,
                )
                self.max_batch //= 2

    def _free_buffers(self) -> None:
        for binding in [*self.inputs, self.output]:
            if binding is None:
                continue
            for buffer in (binding.host, binding.device):
                if buffer is not None:
                    buffer.free()
            binding.host = binding.device = None

    def _run_chunk(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        count = next(iter(arrays.values())).shape[0]
        for binding in self.inputs:
            array = np.ascontiguousarray(arrays[binding.name], dtype=binding.dtype)
            flat = binding.host.array.reshape(-1)[: array.size]
            flat[...] = array.reshape(-1)
            if not self.context.set_input_shape(binding.name, array.shape):
                raise TensorRTExecutionError(
                    f"the {self.tower} engine does not accept {binding.name} of shape {array.shape} (largest {binding.max_shape})"
                )
            self.cuda.copy_to_device(binding.device.ptr, binding.host.ptr, array.nbytes, self.stream)
            self.context.set_tensor_address(binding.name, binding.device.ptr)
        out_shape = tuple(int(v) for v in self.context.get_tensor_shape(self.output.name))
        self.context.set_tensor_address(self.output.name, self.output.device.ptr)
        if not self.context.execute_async_v3(self.stream.handle):
            raise TensorRTExecutionError(f"TensorRT failed to run the {self.tower} engine on a batch of {count}")
        nbytes = int(np.prod(out_shape)) * self.output.dtype.itemsize
        self.cuda.copy_to_host(self.output.host.ptr, self.output.device.ptr, nbytes, self.stream)
        self.stream.synchronize()
        return self.output.host.array.reshape(-1)[: int(np.prod(out_shape))].reshape(out_shape).astype(np.float32)

    def run(self, arrays: dict[str, np.ndarray]) -> np.ndarray:
        """The output for the named input arrays (equal first dimension), split into engine-sized batches."""
        total = next(iter(arrays.values())).shape[0]
        parts = [self._run_chunk({name: a[part] for name, a in arrays.items()}) for part in batch_slices(total, self.max_batch)]
        return np.concatenate(parts, axis=0)

    def close(self) -> None:
        """Free the buffers, the stream and the context."""
        self._free_buffers()
        if self.stream is not None:
            self.stream.destroy()
            self.stream = None
        self.context = None
        self.engine = None
