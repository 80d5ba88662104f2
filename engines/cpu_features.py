"""What the host CPU can do for reduced-precision inference, read from the operating system (no torch).

The fast CPU paths depend on instructions, not on a product name: ONNX Runtime's INT8 kernels use
AVX2 (`vpmaddubsw`), AVX-512 VNNI / AVX-VNNI (`vpdpbusd`) or AMX-INT8 tiles on x86-64 and the
dot-product instructions on 64-bit Arm; PyTorch bfloat16 is only fast where the CPU computes in
bfloat16 natively (AVX512-BF16 or AMX-BF16) and is emulated, several times slower than float32,
everywhere else. Which kernels run also decides the INT8 rounding, so the parity gate's cache key
carries `kernel_signature()`: a gate passed on one instruction set is not trusted on another.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")

INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx2")
"""x86 flags ONNX Runtime's INT8 GEMM kernels use, fastest first."""
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""x86 flags that make bfloat16 matrix products native rather than emulated."""
ARM_INT8_FLAGS = ("i8mm", "asimddp")
"""64-bit Arm features (from /proc/cpuinfo `Features`) for INT8 dot products."""


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set flags of the host CPU that matter for the fast paths."""

    machine: str
    """`platform.machine()`, e.g. x86_64 or aarch64."""
    flags: frozenset[str]

    @property
    def int8_kernel(self) -> str | None:
        """The best INT8 instruction family available (e.g. `avx512_vnni`), or None if INT8 would be slow."""
        for flag in (*INT8_FLAGS, *ARM_INT8_FLAGS):
            if flag in self.flags:
                return flag
        return None

    @property
    def bf16_kernel(self) -> str | None:
        """The native bfloat16 instruction family (`amx_bf16` or `avx512_bf16`), or None if bf16 is emulated."""
        for flag in BF16_FLAGS:
            if flag in self.flags:
                return flag
        return None

    def kernel_signature(self) -> str:
        """A short string naming the kernels reduced-precision inference will use on this CPU (cache keys)."""
        relevant = sorted(f for f in self.flags if f in (*INT8_FLAGS, *BF16_FLAGS, *ARM_INT8_FLAGS))
        return f"{self.machine}:{'+'.join(relevant) or 'baseline'}"


def parse_cpuinfo(text: str, machine: str) -> CpuFeatures:
    """The features in the text of /proc/cpuinfo (x86 `flags` or Arm `Features` lines of the first CPU)."""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break
    return CpuFeatures(machine=machine, flags=frozenset(flags))


def read_cpu_features(cpuinfo: Path = CPUINFO) -> CpuFeatures:
    """The host CPU's features; an unreadable /proc/cpuinfo (not Linux) gives no flags, so no fast path is assumed."""
    machine = platform.machine().lower()
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuFeatures(machine=machine, flags=frozenset())
    return parse_cpuinfo(text, machine)
