"""Model administration commands: `python -m models fetch|build-tiny|build-random|verify ...`.

    python -m models fetch biomedclip DIR [--revision REV]   real weights from the Hugging Face hub
    python -m models build-tiny DIR [--seed N]                 tiny untrained model for tests
    python -m models build-random DIR [--seed N]               full-size untrained model for benchmarks
    python -m models verify PATH                               open a model folder and check its hash
    python -m models promote DIR --to validated --report R --by NAME
                                                               status `validated`, backed by a site validation report

`fetch` uses the hub named by HF_ENDPOINT (a mirror) if set, sends HF_TOKEN if set (gated or
private mirrors), and with `--offline --cache-dir CACHE` reads a copied Hugging Face cache instead.
DIR must be absent or an empty folder; `--replace` replaces a model folder there, once the new
one is complete. Nothing ever appears at DIR unless the whole model was built and verified.

`promote` refuses (exit 2, saying why) unless R is the report.json of `biomedclip-map validate` for
exactly these weights and prompts (and the site's operating points file, with --operating-points,
chosen on that report) whose figures meet the minimums of the site validation configuration
(`app/config/validation.yaml`, or --config).

Exit status 0 on success, 2 when the model folder or its source is unusable or the hub cannot
deliver it (the message says what to fix).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

# `fetch` asks the hub or mirror for the model's files and nothing else: no telemetry, which would
# also make huggingface_hub fetch an AI-agent registry from its import-time endpoint to build
# its User-Agent. The library reads this once, when first imported, so it is set before that.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from common.site_validation import PromotionRefused
from common.configuration import ConfigurationError
from models.errors import ModelBuildError, ModelDirectoryError
from common.zero_shot_tasks import TaskConfigError

log = logging.getLogger("models")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="download and install real weights (needs the network)")
    fetch.add_argument("model", choices=["biomedclip"], help="which model to fetch")
    fetch.add_argument("directory", type=Path, help="new model folder to create")
    fetch.add_argument("--revision", default="main", help="hub revision (branch, tag or commit) of the weights")
    fetch.add_argument("--text-revision", default="main", help="hub revision of the text tower's config")
    fetch.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the downloads in this Hugging Face cache folder (default: a temporary folder beside DIR, deleted afterwards)",
    )
    fetch.add_argument(
        "--offline",
        action="store_true",
        help="no network: take the files from the Hugging Face cache given by --cache-dir (copied from a machine that downloaded them)",
    )
    fetch.add_argument("--replace", action="store_true", help="replace the model folder at DIR once the new one is complete")

    for name, size in (("build-tiny", "tiny (tests)"), ("build-random", "full-size, about 780 MB (benchmarks)")):
        build = commands.add_parser(name, help=f"build a {size} BiomedCLIP-architecture model with random weights")
        build.add_argument("directory", type=Path, help="new model folder to create")
        build.add_argument("--seed", type=int, default=0, help="random seed of the weights")
        build.add_argument("--tasks", type=Path, default=None, help="zero-shot task file whose prompt words go into the vocabulary")
        build.add_argument("--replace", action="store_true", help="replace the model folder at DIR once the new one is complete")

    verify = commands.add_parser("verify", help="open a model folder, verify its weights hash, print its manifest")
    verify.add_argument("path", type=Path, help="model folder, or the models folder holding biomedclip/")

    promote = commands.add_parser("promote", help="set a model's status to validated, backed by a site validation report")
    promote.add_argument("path", type=Path, help="model folder, or the models folder holding biomedclip/")
    promote.add_argument("--to", required=True, choices=["validated"], help="the new status")
    promote.add_argument("--report", type=Path, default=None, help="report.json of 'biomedclip-map validate' for this model")
    promote.add_argument("--by", required=True, help="who is responsible for the promotion (person or committee)")
    promote.add_argument("--config", type=Path, default=None, help="site validation minimums (default: the bundled app/config/validation.yaml)")
    promote.add_argument("--tasks", type=Path, default=None, help="zero-shot task file the model runs with (default: the bundled one)")
    promote.add_argument("--operating-points", type=Path, default=None, help="the site's operating points file, chosen on this report")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one model administration command; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    try:
        if args.command == "fetch":
            from models.fetch import fetch_biomedclip

            model = fetch_biomedclip(
                args.directory,
                revision=args.revision,
                text_revision=args.text_revision,
                cache_dir=args.cache_dir,
                replace=args.replace,
                offline=args.offline,
            )
        elif args.command in ("build-tiny", "build-random"):
            from models.builders import build_random, build_tiny

            build = build_tiny if args.command == "build-tiny" else build_random
            model = build(args.directory, seed=args.seed, task_file=args.tasks, replace=args.replace)
        elif args.command == "promote":
            from models.directory import open_model_dir
            from models.promotion import promote_model

            folder, _, record = promote_model(
                args.path, args.report, by=args.by, config=args.config, task_file=args.tasks,
                operating_points=args.operating_points,
            )
            model = open_model_dir(folder, allow_untrained=False)
            log.info("%s: status validated by %s on %s (validation report sha256 %s)", folder, record.validated_by,
                     record.validated_at, record.report_sha256)
        else:
            from models.directory import open_model_dir

            model = open_model_dir(args.path, allow_untrained=True)
    except (ModelDirectoryError, ModelBuildError, TaskConfigError, PromotionRefused, ConfigurationError, OSError) as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps({"path": str(model.path), **asdict(model.manifest)}, indent=2))
    log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
