"""Inference engine commands: `python -m engines export-onnx MODEL_PATH`.

`export-onnx` writes the ONNX export of a model's towers into `<model folder>/onnx/` (with the
weights hash in `onnx.json`), so a deployment can ship it and run ONNX Runtime without torch.
Exit status 0 on success, 2 when the model or the export is unusable (the message says why).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from engines.onnx_export import OnnxExportError, export_onnx
from engines.onnx_files import onnx_folder_problem
from models.directory import open_model_dir
from models.errors import ModelDirectoryError

log = logging.getLogger("engines")


def main(argv: list[str] | None = None) -> int:
    """Run one engine command; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export-onnx", help="export the model's towers to ONNX inside the model folder")
    export.add_argument("model", type=Path, help="model folder, or the models folder holding biomedclip/")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
    except (ModelDirectoryError, OnnxExportError) as exc:
        log.error("%s", exc)
        return 2
    log.info("exported ONNX to %s", destination)
    return 0


if __name__ == "__main__":
    sys.exit(main())
