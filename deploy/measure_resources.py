"""Measuring what one MAP run needs, for `resources` in app.yaml (memory, cpu, gpuMemory).

Builds (once) the full-size BiomedCLIP-architecture model with random weights in `.work/` (git
ignored), stages the MAP exactly as deploy/build-map.sh does (ONNX export shipped with the
model), and runs the staged application (`python3 <staged>/app`, as the MAP's command) on the
sample studies in a child process. It records the child's peak resident memory (getrusage of
the waited-for child), its CPU time and wall time, and the sizes that determine GPU memory (the
ONNX weights). Results are written as JSON to bench/results/map_resources.json.

    .venv/bin/python deploy/measure_resources.py [--model DIR] [--backend onnxruntime|pytorch]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / ".work" / "models-random" / "biomedclip"
RESULTS = REPO_ROOT / "bench" / "results" / "map_resources.json"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(model_dir: Path, backend: str) -> dict:
    """Stage the MAP with `model_dir`, run it once on the sample studies, return the figures."""
    from app.sample_studies import build_sample_studies
    from deploy.stage_map import stage_map

    with tempfile.TemporaryDirectory(prefix="map-resources-") as scratch:
        scratch_dir = Path(scratch)
        staged = stage_map(scratch_dir / "stage", model_path=model_dir, allow_untrained=True)
        build_sample_studies(scratch_dir / "input")
        studies = sorted(p.name for p in (scratch_dir / "input").iterdir())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(scratch_dir),
            "HOLOSCAN_INPUT_PATH": str(scratch_dir / "input"),
            "HOLOSCAN_OUTPUT_PATH": str(scratch_dir / "output"),
            "HOLOSCAN_MODEL_PATH": str(staged.models_dir),
            "HOLOSCAN_WORKDIR": str(scratch_dir / "work"),
            "BIOMEDCLIP_MAP_ALLOW_UNTRAINED": "1",
            "BIOMEDCLIP_MAP_BACKEND": backend,
        }
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        completed = subprocess.run([sys.executable, str(staged.app_dir)], env=env, cwd=scratch_dir, capture_output=True, text=True)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if completed.returncode != 0:
            raise SystemExit(f"the MAP run failed with exit status {completed.returncode}:\n{completed.stderr[-3000:]}")
        reports = sorted((scratch_dir / "output").glob("*.dcm"))
        onnx_dir = staged.models_dir / "biomedclip" / "onnx"
        cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {
            "model": "full-size BiomedCLIP architecture, random weights (build-random)",
            "backend": backend,
            "studies": len(studies),
            "reports": len(reports),
            "peak_rss_mib": round(after.ru_maxrss / 1024, 1),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu_seconds, 2),
            "mean_cores_busy": round(cpu_seconds / wall, 2),
            "weights_mib": round((staged.models_dir / "biomedclip" / "open_clip_model.safetensors").stat().st_size / 2**20, 1),
            "onnx_mib": round(_folder_bytes(onnx_dir) / 2**20, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/measure_resources.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder (default: a full-size random model in .work/, built if missing)")
    parser.add_argument("--backend", choices=("onnxruntime", "pytorch"), default="onnxruntime")
    args = parser.parse_args(argv)
    if not args.model.exists():
        if args.model != DEFAULT_MODEL:
            print(f"error: model folder {args.model} does not exist", file=sys.stderr)
            return 2
        from models.builders import build_random

        build_random(DEFAULT_MODEL, seed=0)
    figures = measure(args.model, args.backend)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    existing[args.backend] = figures
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
