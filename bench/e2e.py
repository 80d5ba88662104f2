"""Benchmark: the MAP run of a one-photograph study with the full-size model, cold and warm.

The study is the sample burn photograph (one VL Photographic Image, `app/sample_studies.py`); the
model is the full-size random-initialised BiomedCLIP (built into the git-ignored
`model-store/random-full/biomedclip` on first use). Each measured run is a fresh child process
that does what `python -m app` does, with clocks around each part:

- `cold` (process start → SR written), split into interpreter start, imports, model load (opening
  the model folder, verifying its weights hash, opening the backend), and the run itself, whose
  per-study stage times (selection, preprocessing, inference, report writing, …) come from the
  study outcome; `everything_but_model_load_and_inference_s` is the figure the ≤ 3 s target is
  about. The work folder is already prepared (ONNX export, INT8 graph, parity gate, text
  embeddings), as it is for every run after the first on a host.
- `first_run` (informative): the same with an empty work folder, which pays the one-time ONNX
  export, quantisation, parity gate and text embeddings.
- `warm`: further studies in the same process with the model loaded (median per study).
- peak RSS (VmHWM) of the cold process.

Variants: `auto` (what the MAP chooses on this host: the fast CPU path if its parity gate passes,
else ONNX Runtime float32) and `onnxruntime-int8-ungated` (the INT8 path forced in the benchmark
only, bypassing the gate, to show its time and memory where the gate refuses it; the MAP itself
never does this). Output: JSON to `bench/results/e2e.json`; timings and sizes only, no UIDs or
patient data.

`--cold-map` measures instead what a MAP container pays per study under MONAI Deploy Express:
a fresh process with `auto`, an empty work folder that is deleted afterwards (no persistent work
folder: no OpenVINO model cache, no work-folder gate records or text embeddings), on a model folder
prepared as the MAP build prepares it (`python -m app.engine_commands quantize`: ONNX export,
INT8 graphs, gate records for this CPU, text embeddings). Per run: total wall time from spawning
the process to its exit, its peak RSS (`os.wait4`'s rusage of that child alone) and its model-load
time; the median of `--cold-runs` runs is compared with the targets (≤ 2.5 s, ≤ 800 MB). With
`--unprepared MODEL` runs on a model folder without the prepared files are interleaved with them
(they export, quantise and gate in the run: minutes on the full-size model).

Usage: ``python -m bench.e2e [--variants auto,onnxruntime-int8-ungated] [--cold-runs 3] [--warm-runs 5] [--no-first-run]``
       ``python -m bench.e2e --cold-map --model PREPARED_MODEL [--unprepared MODEL] [--cold-runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "e2e.json"
VARIANTS = ("auto", "onnxruntime-int8-ungated")
SPAWNED_ENV = "BENCH_E2E_SPAWNED_AT"
TARGET_OVERHEAD_S = 3.0
TARGET_PEAK_RSS_MB = 1.5 * 1024
COLD_MAP_TARGET_TOTAL_S = 2.5
COLD_MAP_TARGET_PEAK_RSS_MB = 800.0


# --------------------------------------------------------------------------- child side


def _peak_rss_mb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_child(variant: str, study: Path, models: Path, work: Path, scratch: Path, warm_runs: int) -> dict:
    """One MAP process: imports, model load, one study (cold), then `warm_runs` studies; returns the clocks."""
    spawned = float(os.environ[SPAWNED_ENV])
    entered = time.time()

    import app.application  # noqa: F401  (the graph and Holoscan: part of what a MAP run imports)
    from app.analyzer import open_analyzer
    from app.logging_setup import configure_logging
    from app.run import run
    from app.settings import resolve_run_settings
    from operators.messages import OutputKind

    imported = time.time()
    configure_logging("WARNING")
    if variant == "onnxruntime-int8-ungated":
        from engines import selection
        from engines.onnxruntime_int8_backend import OnnxRuntimeInt8Backend

        selection.AUTO_OPENERS["onnxruntime"] = lambda model, work_dir, settings, probes: OnnxRuntimeInt8Backend(model, work_dir)

    def settings_for(output: Path):
        return resolve_run_settings(input_path=study, output_path=output, models_path=models, work_dir=work, allow_untrained=True)

    first_output = scratch / "out-cold"
    settings = settings_for(first_output)
    loading = time.time()
    analyzer = open_analyzer(settings)
    loaded = time.time()
    result = run(settings, analyzer)
    finished = time.time()
    (outcome,) = result.outcomes
    written = outcome.files(OutputKind.REPORT)
    if result.exit_code != 0 or not written or not written[0].is_file():
        raise RuntimeError(f"the MAP run did not write an SR (exit {result.exit_code}, status {outcome.status})")
    stages = {name: round(seconds, 3) for name, seconds in outcome.timings.items()}
    total = finished - spawned
    model_load = loaded - loading
    inference = stages.get("inference", 0.0)
    cold = {
        "total_s": round(total, 3),
        "interpreter_start_s": round(entered - spawned, 3),
        "import_s": round(imported - entered, 3),
        "model_load_s": round(model_load, 3),
        "run_s": round(finished - loaded, 3),
        "stages_s": stages,
        "preprocessing_s": stages.get("preprocessing", 0.0),
        "inference_s": inference,
        "writing_s": stages.get("report writing", 0.0),
        "graph_and_loading_s": round(finished - loaded - sum(stages.values()), 3),
        "everything_but_model_load_and_inference_s": round(total - model_load - inference, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "backend": analyzer.backend.name,
    }
    warm = []
    for index in range(warm_runs):
        output = scratch / f"out-warm-{index}"
        began = time.time()
        again = run(settings_for(output), analyzer)
        (warm_outcome,) = again.outcomes
        warm.append({"total_s": time.time() - began, **{k: v for k, v in warm_outcome.timings.items()}})
    return {"cold": cold, "warm": warm, "peak_rss_after_warm_mb": round(_peak_rss_mb(), 1)}


# --------------------------------------------------------------------------- parent side


def _spawn(variant: str, study: Path, models: Path, work: Path, warm_runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-e2e-out-") as scratch:
        command = [
            sys.executable, "-m", "bench.e2e", "--child", variant, "--study", str(study), "--models", str(models),
            "--work", str(work), "--scratch", scratch, "--warm-runs", str(warm_runs),
        ]
        env = {**os.environ, SPAWNED_ENV: repr(time.time())}
        result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{variant} run failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _summarise_warm(runs: list[dict]) -> dict:
    keys = sorted({key for run in runs for key in run})
    return {key: round(_median([run.get(key, 0.0) for run in runs]), 3) for key in keys} | {"studies": len(runs)}


def measure_variant(variant: str, study: Path, models: Path, cold_runs: int, warm_runs: int, first_run: bool) -> dict:
    """First run (optional), `cold_runs` cold processes on the prepared work folder, warm studies in the last."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-work-") as work_dir:
        work = Path(work_dir)
        print(f"{variant}: preparing the work folder (first run) …", file=sys.stderr, flush=True)
        first = _spawn(variant, study, models, work, 0)
        colds = []
        for index in range(cold_runs):
            print(f"{variant}: cold run {index + 1}/{cold_runs} …", file=sys.stderr, flush=True)
            colds.append(_spawn(variant, study, models, work, warm_runs if index == cold_runs - 1 else 0))
    keys = [k for k, v in colds[0]["cold"].items() if isinstance(v, (int, float))]
    cold = {key: round(_median([c["cold"][key] for c in colds]), 3) for key in keys}
    cold["stages_s"] = {
        stage: round(_median([c["cold"]["stages_s"].get(stage, 0.0) for c in colds]), 3) for stage in colds[0]["cold"]["stages_s"]
    }
    cold["backend"] = colds[0]["cold"]["backend"]
    cold["runs"] = len(colds)
    report = {"cold_median": cold, "warm_median_per_study": _summarise_warm(colds[-1]["warm"])}
    if first_run:
        report["first_run_empty_work_folder"] = first["cold"]
    report["targets"] = {
        "everything_but_model_load_and_inference_s": {
            "target": TARGET_OVERHEAD_S,
            "value": cold["everything_but_model_load_and_inference_s"],
            "met": cold["everything_but_model_load_and_inference_s"] <= TARGET_OVERHEAD_S,
        },
        "peak_rss_mb": {"target": TARGET_PEAK_RSS_MB, "value": cold["peak_rss_mb"], "met": cold["peak_rss_mb"] <= TARGET_PEAK_RSS_MB},
    }
    return report


def _spawn_measured(variant: str, study: Path, models: Path, work: Path) -> dict:
    """One child MAP process; its own clocks plus, from the parent, wall time to exit and that child's peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-out-") as scratch:
        command = [
            sys.executable, "-m", "bench.e2e", "--child", variant, "--study", str(study), "--models", str(models),
            "--work", str(work), "--scratch", scratch, "--warm-runs", "0",
        ]
        began = time.time()
        env = {**os.environ, SPAWNED_ENV: repr(began)}
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            child = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=out, stderr=err, text=True)
            _, status, usage = os.wait4(child.pid, 0)
            ended = time.time()
            child.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
    if child.returncode != 0:
        raise RuntimeError(f"cold MAP run failed (exit {child.returncode}):\n{stderr[-3000:]}")
    cold = json.loads(stdout.strip().splitlines()[-1])["cold"]
    return {
        "total_to_exit_s": round(ended - began, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports kilobytes
        "model_load_s": cold["model_load_s"],
        "import_s": cold["import_s"],
        "interpreter_start_s": cold["interpreter_start_s"],
        "run_s": cold["run_s"],
        "inference_s": cold["inference_s"],
        "sr_written_s": cold["total_s"],
        "backend": cold["backend"],
    }


def _prepared(model_dir: Path) -> dict:
    """Which of the files a prepared model folder ships are present (the cold run's precondition, reported)."""
    onnx = model_dir / "onnx"
    return {
        "onnx_export": (onnx / "image_encoder.onnx").is_file(),
        "openvino_int8_graph": (onnx / "openvino-int8").is_dir(),
        "onnxruntime_int8_graph": (onnx / "int8").is_dir(),
        "gate_records": len(list((onnx / "gates").glob("*.json"))) if (onnx / "gates").is_dir() else 0,
        "text_embeddings": len(list((onnx / "text-embeddings").glob("*.npy"))) if (onnx / "text-embeddings").is_dir() else 0,
    }


def measure_cold_map(study: Path, folders: dict[str, Path], runs: int) -> dict:
    """`runs` cold MAP runs with `auto` per model folder (interleaved), each with a new empty work folder; medians."""
    measured: dict[str, list[dict]] = {label: [] for label in folders}
    for index in range(runs):
        for label, models in folders.items():
            print(f"cold MAP run ({label}) {index + 1}/{runs} …", file=sys.stderr, flush=True)
            with tempfile.TemporaryDirectory(prefix="bench-e2e-cold-work-") as work:
                measured[label].append(_spawn_measured("auto", study, models, Path(work)))
    report = {}
    for label, results in measured.items():
        keys = [k for k, v in results[0].items() if isinstance(v, (int, float))]
        median = {key: round(_median([r[key] for r in results]), 3) for key in keys}
        median["backend"] = sorted({r["backend"] for r in results})
        report[label] = {
            "model_folder": _prepared(next(folders[label].iterdir())),
            "runs": results,
            "median": median,
            "targets": {
                "total_s": {"target": COLD_MAP_TARGET_TOTAL_S, "value": median["total_to_exit_s"],
                            "met": median["total_to_exit_s"] <= COLD_MAP_TARGET_TOTAL_S},
                "peak_rss_mb": {"target": COLD_MAP_TARGET_PEAK_RSS_MB, "value": median["peak_rss_mb"],
                                "met": median["peak_rss_mb"] <= COLD_MAP_TARGET_PEAK_RSS_MB},
            },
        }
    return report


def _cpu_description() -> dict:
    """`lscpu`'s model name and the ISA flags that decide the CPU paths (AVX2, AVX-512, VNNI, BF16, AMX)."""
    model, flags = "", []
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = [f for f in line.split(":", 1)[1].split() if f.startswith(("avx", "amx")) or "vnni" in f or "bf16" in f]
    return {"model_name": model, "isa_flags": flags, "cpu_count": os.cpu_count()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="full-size model folder (default: the benchmark's, built if absent)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--no-first-run", action="store_true", help="leave the empty-work-folder run out of the report")
    parser.add_argument("--cold-map", action="store_true", help="cold MAP runs with auto on a prepared model folder (see above)")
    parser.add_argument("--unprepared", type=Path, default=None, help="with --cold-map: also a model folder without the prepared files, interleaved")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--study", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--models", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(args.child, args.study, args.models, args.work, args.scratch, args.warm_runs)))
        return 0

    from bench.inference import DEFAULT_MODEL, ensure_model

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        parser.error(f"unknown variants; choose from {', '.join(VARIANTS)}")
    model_dir = ensure_model(args.model or DEFAULT_MODEL)
    started = time.perf_counter()
    if args.cold_map:
        return _main_cold_map(model_dir, args.unprepared, args.cold_runs, args.out, started)
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        from app.sample_studies import build_sample_studies

        samples = {s.name: s.path for s in build_sample_studies(Path(tmp) / "samples")}
        study = Path(tmp) / "study"
        shutil.copytree(samples["burn-photograph"], study)
        models = Path(tmp) / "models"
        models.mkdir()
        (models / model_dir.name).symlink_to(model_dir.resolve(), target_is_directory=True)
        files = sorted(p.name for p in study.rglob("*") if p.is_file())
        reports = {v: measure_variant(v, study, models, args.cold_runs, args.warm_runs, not args.no_first_run) for v in variants}
    result = {
        "benchmark": "e2e",
        "study": {"description": "one VL photograph (sample burn photograph)", "files": len(files)},
        "model": "BiomedCLIP architecture, full size, random weights (untrained)",
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()},
        "variants": reports,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0



def _main_cold_map(model_dir: Path, unprepared: Path | None, runs: int, out: Path, started: float) -> int:
    """`--cold-map`: the cold MAP runs, as JSON on stdout and in `out`."""
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        from app.sample_studies import build_sample_studies

        samples = {s.name: s.path for s in build_sample_studies(Path(tmp) / "samples")}
        study = Path(tmp) / "study"
        shutil.copytree(samples["burn-photograph"], study)
        folders = {}
        for label, folder in (("prepared", model_dir), ("unprepared", unprepared)):
            if folder is None:
                continue
            models = Path(tmp) / f"models-{label}"
            models.mkdir()
            (models / folder.name).symlink_to(folder.resolve(), target_is_directory=True)
            folders[label] = models
        report = measure_cold_map(study, folders, runs)
    result = {
        "benchmark": "e2e-cold-map",
        "study": "one VL photograph (sample burn photograph)",
        "model": "BiomedCLIP architecture, full size, random weights (untrained)",
        "backend_setting": "auto",
        "work_folder": "new and empty per run, deleted after it (no persistent work folder)",
        "machine": {"python": platform.python_version(), **_cpu_description()},
        "cold_map_auto": report,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
