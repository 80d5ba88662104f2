"""Inference engine commands: `python -m engines export MODEL_PATH`, `python -m engines triton-repo OUT`,
`python -m engines build --precision fp16|int8 [--calib DIR]`, `python -m engines quantize`.

`export` (alias `export-onnx`) writes the ONNX export of a model's towers into `<model folder>/onnx/`
(with the weights hash in `onnx.json`), so a deployment can ship it and run ONNX Runtime without
torch, and checks it against PyTorch (cosine ≥ 0.9999, engines/export_parity.py). `build` and
`quantize` are described in engines/build_commands.py.
Exit status 0 on success, 2 when the model or the export is unusable (the message says why).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from engines.build_commands import COMMANDS as BUILD_COMMANDS, add_build_commands, run_build_command
from engines.export_parity import ExportParityError, check_export_parity
from engines.onnx_export import OnnxExportError, export_onnx
from engines.onnx_files import onnx_folder_problem
from engines.triton_repository import add_triton_repo_command, run_triton_repo_command
from models.directory import open_model_dir
from models.errors import ModelDirectoryError

log = logging.getLogger("engines")


def main(argv: list[str] | None = None) -> int:
    """Run one engine command; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", aliases=["export-onnx"], help="export the model's towers to ONNX inside the model folder")
    export.add_argument("model", type=Path, help="model folder, or the models folder holding biomedclip/")
    add_triton_repo_command(commands)
    add_build_commands(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "triton-repo":
        return run_triton_repo_command(args)
    if args.command in BUILD_COMMANDS:
        return run_build_command(args)
    try:
        model = open_model_dir(args.model, allow_untrained=True)
        destination = model.shipped_onnx_dir
        if destination.exists():
            problem = onnx_folder_problem(destination, model.sha256)
            if problem is None:
                log.info("%s already holds the ONNX export of these weights", destination)
                return 0
            raise OnnxExportError(f"{destination} exists but is unusable ({problem}); remove it and export again")
        export_onnx(model, destination)
        try:
            parity = check_export_parity(model, destination)
        except ExportParityError:
            shutil.rmtree(destination, ignore_errors=True)  # a wrong export must not be shipped
            raise
    except (ModelDirectoryError, OnnxExportError, ExportParityError) as exc:
        log.error("%s", exc)
        return 2
    log.info(
        "exported ONNX to %s; parity with PyTorch: smallest cosine %.6f (image), %.6f (text)",
        destination, parity.image_min_cosine, parity.text_min_cosine,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
