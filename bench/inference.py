"""Benchmark: every available inference backend on the full-size BiomedCLIP architecture, in one run.

The model is the full-size random-initialised BiomedCLIP (`python -m models build-random`; built
into the git-ignored `model-store/random-full/biomedclip` on first use, about 20 s), the same
architecture and sizes as the real one. Each backend is loaded in its own long-lived child process,
so its peak resident memory (VmHWM) is its own; the parent then times the backends in interleaved
rounds (one call per backend per round), so that every backend sees the same share of whatever
else the host is doing and the ratios stay meaningful on a shared machine. Measured:

- the image tower at batch 1 and 8 (and 32 on a GPU): images/s at the median (and at the best)
  call, p50/p95 milliseconds per batch;
- the text tower on 10 prompts in one batch: p50/p95 milliseconds;
- parity: the smallest cosine similarity of its image embeddings (8 preprocessed sample-study
  images) with PyTorch float32 eager's, and for reduced-precision paths the parity gate's figures
  (top-1 agreement on the probe set) when this CPU offers the path.

Backends: `pytorch` (float32 eager: the reference every ratio is taken against), `pytorch-bf16`
(autocast; noted when this CPU has no native bfloat16), `onnxruntime` (float32), `onnxruntime-int8`,
`openvino` (float32), `openvino-bf16` (skipped with the reason where bfloat16 is not native),
`openvino-int8` (NNCF static INT8, calibrated on the sample studies; made once in the work folder
before the timings), and `tensorrt-fp16` / `tensorrt-int8` where TensorRT and a GPU are present
(otherwise listed as skipped with the reason). Reduced-precision backends are opened directly here, so they are
measured even where the MAP's parity gate would not choose them; the JSON says whether it would.

Threads: PyTorch and OpenVINO are set to `--threads` (default 2); ONNX Runtime uses one thread per
physical core, which is 2 on the reference machine. The JSON names the CPU (model name, the
instruction flags that matter, the kernel signature of engines/cpu_features.py). Timings are wall-clock after a warm-up call per batch size.
Output: JSON to `bench/results/inference.json`.

Usage: ``python -m bench.inference [--model DIR] [--backends a,b] [--rounds 10] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "inference.json"
DEFAULT_MODEL = REPO_ROOT / "model-store" / "random-full" / "biomedclip"
DEFAULT_WORK = REPO_ROOT / "model-store" / "random-full" / "work"
BACKENDS = (
    "pytorch", "pytorch-bf16", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16", "openvino-int8",
    "tensorrt-fp16", "tensorrt-int8",
)
OPENVINO_PRECISIONS = {"openvino": "fp32", "openvino-bf16": "bf16", "openvino-int8": "int8"}
REFERENCE = "pytorch"
PROMPTS = [
    "this is a photo of a burn wound on the skin",
    "this is a photo of healthy intact skin",
    "a clinical photograph of a skin lesion that is not a burn",
    "this is an image of a normal chest X-ray",
    "this is an image of pneumonia",
    "a medical image showing pleural effusion",
    "a medical image showing pneumothorax",
    "this is an image of cardiomegaly",
    "this is an image of pulmonary edema",
    "a computed tomography scan with no abnormality",
]
TARGET_CPU_SPEEDUP_VNNI = 6.0
"""The fastest gated CPU path at batch 8 against PyTorch float32 eager, on AVX-512 VNNI or AMX CPUs."""
TARGET_CPU_SPEEDUP_AVX2 = 3.0
"""The same on CPUs with AVX2 only."""
MIN_RUNS = 3
TARGET_GPU_SPEEDUP = 3.0
TARGET_GPU_BATCH1_P50_MS = 3.0


def peak_rss_bytes() -> int:
    """This process's peak resident memory (VmHWM), in bytes; 0 where /proc is not available."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (what `lscpu` calls Model name), or the platform's word for it."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ensure_model(path: Path) -> Path:
    """The full-size random model folder, built with `models.builders.build_random` if absent."""
    if not (path / "manifest.json").is_file():
        from models.builders import build_random

        print(f"building the full-size random model in {path} (once, about 20 s)", file=sys.stderr)
        build_random(path, seed=0)
    return path


# --------------------------------------------------------------------------- child side


def _open(name: str, model, work: Path, threads: int):
    """The backend object `name`, opened directly (no parity gate; the gate is reported separately)."""
    if name in OPENVINO_PRECISIONS:
        from app.probe_set import SampleStudyProbes
        from engines.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(
            model, work, OPENVINO_PRECISIONS[name], calibration=lambda: SampleStudyProbes().calibration_set(model), threads=threads
        )
    if name == "pytorch":
        from engines.pytorch_backend import PyTorchBackend

        return PyTorchBackend(model)
    if name == "pytorch-bf16":
        from engines.pytorch_bf16_backend import PyTorchBf16Backend

        return PyTorchBf16Backend(model)
    if name == "onnxruntime":
        from engines.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model, work)
    if name == "onnxruntime-int8":
        from engines.onnxruntime_int8_backend import OnnxRuntimeInt8Backend

        return OnnxRuntimeInt8Backend(model, work)
    from app.probe_set import SampleStudyProbes
    from engines.tensorrt_backend import TensorRTBackend
    from engines.tensorrt_build import TensorRTBuilder
    from engines.tensorrt_cuda import open_cuda_runtime

    return TensorRTBackend(
        model, work, name.split("-")[1], builder=TensorRTBuilder(), cuda=open_cuda_runtime(), probes=SampleStudyProbes()
    )


def _skip_reason(name: str) -> str | None:
    """Why `name` cannot run on this host, or None."""
    if name in OPENVINO_PRECISIONS:
        from engines.cpu_fast_path import PATHS_BY_NAME
        from engines.cpu_features import read_cpu_features

        return PATHS_BY_NAME[name].not_offered(read_cpu_features())
    if name.startswith("tensorrt"):
        try:
            import tensorrt  # noqa: F401
        except (ImportError, OSError) as exc:
            return f"TensorRT is not installed ({exc})"
        from engines.tensorrt_cuda import CudaUnavailable, open_cuda_runtime

        try:
            open_cuda_runtime()
        except CudaUnavailable as exc:
            return f"no CUDA GPU ({exc})"
    return None


def _gate_figures(name: str, model, work: Path) -> dict | None:
    """The MAP's parity-gate figures for a CPU fast path (run once and cached in the work folder)."""
    from app.probe_set import SampleStudyProbes
    from engines.cpu_fast_path import PATHS_BY_NAME, gate_records, gated_result
    from engines.cpu_features import read_cpu_features

    if name not in PATHS_BY_NAME:
        return None
    path = PATHS_BY_NAME[name]
    features = read_cpu_features()
    offered = path.not_offered(features)
    if offered is not None:
        return {"offered_on_this_cpu": False, "why_not": offered}
    result, backend = gated_result(path, model, work, features, gate_records(model, work), SampleStudyProbes())
    if backend is not None:
        backend.close()
    return {
        "offered_on_this_cpu": True,
        "passed": result.passed,
        "reason": result.reason,
        "min_cosine": result.min_cosine,
        "max_prob_change": result.max_prob_change,
        "top1_agreement": result.top1_agreement,
        "decisions": result.decisions,
        "decisive_margin": result.decisive_margin,
        "decisive_decisions": result.decisive_decisions,
        "decisive_agreement": result.decisive_agreement,
        "note": result.note,
        "probes": result.probes,
    }


def serve_child(name: str, model_dir: Path, work: Path, threads: int, scratch: Path) -> None:
    """One backend in this process, driven over stdin/stdout by the parent, one JSON line per answer.

    Commands: `image N` (one timed image batch of N), `text` (one timed 10-prompt batch),
    `report` (memory and parity-gate figures; then the process exits). torch is imported only
    for the PyTorch backends, so the others' memory figures are their own.
    """
    if name.startswith("pytorch"):
        import torch

        torch.set_num_threads(threads)
    from engines.tokenizer import TextTokenizer
    from models.directory import open_model_dir

    model = open_model_dir(model_dir, allow_untrained=True)
    images8 = np.load(scratch / "images8.npy")
    tokens = TextTokenizer.from_model(model)(PROMPTS)
    loading = time.perf_counter()
    backend = _open(name, model, work, threads)
    load_s = time.perf_counter() - loading
    rss_after_load = peak_rss_bytes()
    np.save(scratch / f"{name}.npy", backend.encode_images(images8))
    backend.encode_texts(tokens.input_ids, tokens.attention_mask)  # warm-up of the text path
    batches: dict[int, np.ndarray] = {}
    print(json.dumps({"ready": backend.name, "load_s": round(load_s, 2)}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "image":
            size = int(command[1])
            if size not in batches:
                batches[size] = np.ascontiguousarray(np.resize(images8, (size, *images8.shape[1:])))
                backend.encode_images(batches[size])  # warm-up at this batch size
            began = time.perf_counter()
            backend.encode_images(batches[size])
            print(json.dumps({"seconds": time.perf_counter() - began}), flush=True)
        elif command[0] == "text":
            began = time.perf_counter()
            backend.encode_texts(tokens.input_ids, tokens.attention_mask)
            print(json.dumps({"seconds": time.perf_counter() - began}), flush=True)
        elif command[0] == "report":
            backend.close()
            report = {
                "backend": backend.name,
                "load_s": round(load_s, 2),
                "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
                "rss_after_load_mb": round(rss_after_load / 2**20, 1),
                "text_tokens": list(tokens.input_ids.shape),
            }
            report["parity_gate"] = _gate_figures(name, model, work)
            print(json.dumps(report), flush=True)
            return


# --------------------------------------------------------------------------- parent side


class Child:
    """A backend's long-lived child process, asked for one timed call at a time."""

    def __init__(self, name: str, model_dir: Path, work: Path, threads: int, scratch: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        command = [
            sys.executable, "-m", "bench.inference", "--child", name, "--model", str(model_dir), "--work", str(work),
            "--threads", str(threads), "--scratch", str(scratch),
        ]
        self.name = name
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.ready = self._answer()

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.stderr.seek(0)
            lines = self.stderr.read().strip().splitlines()
            raise RuntimeError(f"{self.name} stopped (exit {self.process.returncode}): {lines[-1] if lines else 'no message'}")
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer()

    def finish(self) -> dict:
        report = self.ask("report")
        self.process.wait()
        self.stderr.close()
        return report


def _figures(times: list[float], batch: int) -> dict:
    p50, p95 = float(np.percentile(times, 50)), float(np.percentile(times, 95))
    return {
        "images_per_s": round(batch / p50, 3),
        "images_per_s_best": round(batch / min(times), 3),
        "p50_ms": round(p50 * 1000, 2),
        "p95_ms": round(p95 * 1000, 2),
        "runs": len(times),
    }


def measure_all(names: list[str], model_dir: Path, work: Path, threads: int, rounds: int, max_seconds: float, scratch: Path) -> dict:
    """Load every backend in its own child, then time them in interleaved rounds.

    Interleaving (round r: backend A, B, C, … one call each) gives every backend the same share
    of whatever else the host is doing, so the ratios stay meaningful on a shared machine. A
    backend whose calls at one batch size have used up `max_seconds` (bfloat16 emulation is very
    slow) stops after `MIN_RUNS`.
    """
    reports: dict[str, dict] = {}
    children: dict[str, Child] = {}
    for name in names:
        reason = _skip_reason(name)
        if reason is not None:
            reports[name] = {"skipped": reason}
            continue
        print(f"loading {name} …", file=sys.stderr, flush=True)
        try:
            children[name] = Child(name, model_dir, work, threads, scratch)
        except RuntimeError as exc:
            reports[name] = {"failed": str(exc)}
    gpu = _skip_reason("tensorrt-fp16") is None
    sizes = (1, 8, 32) if gpu else (1, 8)
    timings: dict[str, dict[str, list[float]]] = {name: {} for name in children}
    for label in [*(f"image {size}" for size in sizes), "text"]:
        print(f"timing {label} …", file=sys.stderr, flush=True)
        for round_index in range(rounds):
            order = list(children)[round_index % max(len(children), 1):] + list(children)[: round_index % max(len(children), 1)]
            for name in order:
                spent = timings[name].setdefault(label, [])
                if len(spent) >= MIN_RUNS and sum(spent) > max_seconds:
                    continue
                spent.append(children[name].ask(label)["seconds"])
    for name, child in children.items():
        report = child.finish()
        report["image_tower"] = {label.split()[1]: _figures(t, int(label.split()[1])) for label, t in timings[name].items() if label != "text"}
        text = timings[name]["text"]
        report["text_tower_10_prompts"] = {
            "p50_ms": round(float(np.percentile(text, 50)) * 1000, 2),
            "p95_ms": round(float(np.percentile(text, 95)) * 1000, 2),
            "tokens": report.pop("text_tokens"),
            "runs": len(text),
        }
        report["_embeddings"] = str(scratch / f"{name}.npy")
        reports[name] = report
    return reports


def _ratios(reports: dict) -> None:
    """Add images/s ratios against PyTorch float32 eager and the parity cosine to every report."""
    reference = reports.get(REFERENCE, {})
    if "image_tower" not in reference:
        return
    ref_embeddings = np.load(reference["_embeddings"])
    for name, report in reports.items():
        if "image_tower" not in report:
            continue
        report["speedup_vs_pytorch_fp32"] = {
            batch: round(figures["images_per_s"] / reference["image_tower"][batch]["images_per_s"], 3)
            for batch, figures in report["image_tower"].items()
            if batch in reference["image_tower"]
        }
        report["speedup_vs_pytorch_fp32_best_calls"] = {
            batch: round(figures["images_per_s_best"] / reference["image_tower"][batch]["images_per_s_best"], 3)
            for batch, figures in report["image_tower"].items()
            if batch in reference["image_tower"]
        }
        embeddings = np.load(report["_embeddings"])
        cosines = (embeddings * ref_embeddings).sum(1) / (np.linalg.norm(embeddings, axis=1) * np.linalg.norm(ref_embeddings, axis=1))
        report["min_cosine_vs_pytorch_fp32"] = round(float(cosines.min()), 6)
    for report in reports.values():
        report.pop("_embeddings", None)


def _targets(reports: dict) -> dict:
    """Whether the issue's inference targets are met by the figures of this run."""
    targets: dict = {}
    cpu_candidates = {
        name: r for name, r in reports.items()
        if "speedup_vs_pytorch_fp32" in r and not name.startswith("tensorrt") and name != REFERENCE
    }

    def accurate(name: str, report: dict) -> bool:
        gate = report.get("parity_gate")
        if name == "onnxruntime":
            return report.get("min_cosine_vs_pytorch_fp32", 0) >= 0.9999
        return bool(gate and gate.get("offered_on_this_cpu") and gate.get("passed"))

    accurate_paths = {n: r["speedup_vs_pytorch_fp32"]["8"] for n, r in cpu_candidates.items() if accurate(n, r)}
    fastest_any = max(cpu_candidates.items(), key=lambda item: item[1]["speedup_vs_pytorch_fp32"]["8"], default=None)
    best_accurate = max(accurate_paths.items(), key=lambda item: item[1], default=None)
    from engines.cpu_features import read_cpu_features

    flags = read_cpu_features().flags
    target = TARGET_CPU_SPEEDUP_VNNI if flags & {"avx512_vnni", "amx_int8"} else TARGET_CPU_SPEEDUP_AVX2
    targets["cpu_batch8_fastest_accurate_speedup"] = {
        "target": target,
        "path": best_accurate[0] if best_accurate else None,
        "speedup": best_accurate[1] if best_accurate else None,
        "met": bool(best_accurate and best_accurate[1] >= target),
        "fastest_path_regardless_of_gate": fastest_any[0] if fastest_any else None,
        "fastest_speedup_regardless_of_gate": fastest_any[1]["speedup_vs_pytorch_fp32"]["8"] if fastest_any else None,
    }
    trt = reports.get("tensorrt-fp16", {})
    if "image_tower" in trt and "32" in trt.get("speedup_vs_pytorch_fp32", {}):
        targets["gpu_tensorrt_fp16_batch32_speedup"] = {
            "target": TARGET_GPU_SPEEDUP,
            "speedup": trt["speedup_vs_pytorch_fp32"]["32"],
            "met": trt["speedup_vs_pytorch_fp32"]["32"] >= TARGET_GPU_SPEEDUP,
        }
        targets["gpu_tensorrt_fp16_batch1_p50_ms"] = {
            "target": TARGET_GPU_BATCH1_P50_MS,
            "p50_ms": trt["image_tower"]["1"]["p50_ms"],
            "met": trt["image_tower"]["1"]["p50_ms"] <= TARGET_GPU_BATCH1_P50_MS,
        }
    else:
        targets["gpu"] = "not measured: no TensorRT and GPU on this host"
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="full-size model folder (built if absent)")
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work folder for ONNX, INT8 and engine caches")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated subset of " + ", ".join(BACKENDS))
    parser.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds per batch size (default 10)")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="a backend stops early at a batch size once its calls took this long")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        serve_child(args.child, args.model, args.work, args.threads, args.scratch)
        return 0

    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {', '.join(BACKENDS)}")
    if REFERENCE not in names:
        names.insert(0, REFERENCE)
    model_dir = ensure_model(args.model)
    args.work.mkdir(parents=True, exist_ok=True)
    from engines.cpu_features import read_cpu_features
    from engines.onnx_files import onnx_files_for
    from models.directory import open_model_dir

    from app.probe_set import sample_study_images

    model = open_model_dir(model_dir, allow_untrained=True)
    onnx_files = onnx_files_for(model, args.work)  # export once, outside the timings
    calibration = sample_study_images(size=model.image_size, mean=model.mean, std=model.std)
    samples = calibration.images
    if "openvino-int8" in names and _skip_reason("openvino-int8") is None:
        from engines.openvino_quantization import openvino_int8_graph_for

        print("making the OpenVINO INT8 graph (once per work folder) …", file=sys.stderr, flush=True)
        openvino_int8_graph_for(model, onnx_files, args.work, lambda: calibration)
    features = read_cpu_features()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        np.save(Path(scratch) / "images8.npy", np.resize(samples, (8, *samples.shape[1:])))
        reports = measure_all(names, model_dir, args.work, args.threads, args.rounds, args.max_seconds, Path(scratch))
        _ratios(reports)
    import onnxruntime
    import openvino
    import torch

    result = {
        "benchmark": "inference",
        "model": "BiomedCLIP architecture, full size, random weights (untrained)",
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "cpu_int8_kernel": features.int8_kernel,
            "cpu_bf16_kernel": features.bf16_kernel,
            "cpu_signature": features.kernel_signature(),
            "cpu_model": cpu_model_name(),
            "cpu_flags": sorted(f for f in features.flags if f.startswith(("avx", "amx", "fma", "sse4")) or f in ("f16c", "vnni")),
            "openvino": openvino.__version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "threads": args.threads,
        },
        "reference": f"{REFERENCE} (float32 eager)",
        "backends": reports,
        "targets": _targets(reports),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
