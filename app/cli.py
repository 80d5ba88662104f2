"""Command line of biomedclip-map: `run` (the MAP contract), `demo` (sample studies end to end),
`serve` (the DICOM node), `validate` (site validation on labelled studies) and `operating-points`
(a threshold per label chosen from a validation report).

Exit codes: 0 every study was reported or had nothing to analyse (the log says why); 1 at least
one study failed internally or was refused because its instances disagree on patient identity
(the others were still processed); 2 the run could not start (a setting, the model folder or the
configuration is unusable — the message says which).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from app import APP_NAME, __version__
from app.logging_setup import configure_logging
from app.run import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, run
from app.settings import RunSettings, SettingsError, resolve_run_settings
from app.node.command import ServeRequest
from engines.base import BACKEND_CHOICES

__all__ = ["EXIT_CANNOT_START", "EXIT_OK", "EXIT_STUDY_FAILED", "configure_logging", "main", "map_main"]

logger = logging.getLogger("biomedclip_map")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The MAP run contract (the SDK's -i/-o/-m/-w) plus this product's options."""
    parser.add_argument("-i", "--input", help="input folder of DICOM files (default: $HOLOSCAN_INPUT_PATH, else ./input)")
    parser.add_argument("-o", "--output", help="output folder for the DICOM results (default: $HOLOSCAN_OUTPUT_PATH, else ./output)")
    parser.add_argument("-m", "--model", dest="models", help="folder holding the model directory 'biomedclip/' (default: $HOLOSCAN_MODEL_PATH, else ./models)")
    parser.add_argument("-w", "--workdir", help="work folder for caches (default: $HOLOSCAN_WORKDIR, else a folder in the system temp dir)")
    parser.add_argument("--allow-untrained", action="store_true", help="accept a model whose manifest status is 'untrained' (results are meaningless; every output says so). Also BIOMEDCLIP_MAP_ALLOW_UNTRAINED=1")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, help="force an inference backend (default: auto; also BIOMEDCLIP_MAP_BACKEND)")
    parser.add_argument("--results-json", dest="results_json", help="also write machine-readable JSON results into this folder (kept out of the DICOM output folder)")
    parser.add_argument("--rules", help="selection rules JSON (MONAI Deploy SDK format); default: the bundled rules")
    parser.add_argument("--tasks", help="zero-shot task YAML; default: the bundled tasks")
    parser.add_argument("-t", "--triton-server-netloc", dest="triton_server_netloc", help="send inference to this Triton server, host:port (default: $TRITON_SERVER_NETLOC; unset: local inference)")
    parser.add_argument("--triton-fallback", choices=("none", "local"), help="when the Triton server is unusable: fail (none, default) or infer locally (also BIOMEDCLIP_MAP_TRITON_FALLBACK)")
    parser.add_argument("--audit-log", dest="audit_log", help="append one JSON line per processed study to this file (default: WORKDIR/audit.jsonl; also BIOMEDCLIP_MAP_AUDIT_LOG)")
    parser.add_argument("--deid-export", dest="deid_export", help="also write de-identified copies (DICOM PS3.15 Basic Profile) of each study's results into this folder, outside -o (also BIOMEDCLIP_MAP_DEID_EXPORT_DIR)")
    parser.add_argument("--deid-include-inputs", dest="deid_include_inputs", action="store_true", help="with --deid-export: also export de-identified copies of the analysed input instances (also BIOMEDCLIP_MAP_DEID_INCLUDE_INPUTS=1)")
    parser.add_argument("--clinical-context", dest="clinical_context", action="store_true", help="add one scrubbed clinical-context line from the study's free text (descriptions, history, reason for the request) to the SR; off by default, so no source free text goes into any output (also BIOMEDCLIP_MAP_CLINICAL_CONTEXT=1)")
    parser.add_argument("--operating-points", dest="operating_points", help="the site's operating points file ('biomedclip-map operating-points'): findings are reported present / absent / indeterminate; refused unless made for this model and these prompts (also BIOMEDCLIP_MAP_OPERATING_POINTS)")
    parser.add_argument("--adapter", help="the site adapter folder ('biomedclip-map adapt'): its linear probes replace zero-shot for its tasks; refused unless fitted on this model and these prompts (also BIOMEDCLIP_MAP_ADAPTER)")
    parser.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run settings that the run-contract flags (see `add_run_arguments`) ask for."""
    return resolve_run_settings(
        input_path=args.input,
        output_path=args.output,
        models_path=args.models,
        work_dir=args.workdir,
        allow_untrained=args.allow_untrained,
        backend=args.backend,
        results_json_dir=args.results_json,
        selection_rules=args.rules,
        tasks=args.tasks,
        triton_server_netloc=args.triton_server_netloc,
        triton_fallback=args.triton_fallback,
        audit_log=args.audit_log,
        deid_export=args.deid_export,
        deid_include_inputs=args.deid_include_inputs,
        clinical_context=args.clinical_context,
        operating_points=args.operating_points,
        adapter=args.adapter,
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Resolve the settings from the flags and the environment, run once; the exit code."""
    try:
        settings = settings_from_args(args)
    except SettingsError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    return run(settings).exit_code


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    """`validate`: labelled studies in, a validation report out (no DICOM written)."""
    from app.validation.metrics import DEFAULT_BOOTSTRAP, DEFAULT_SEED

    parser.add_argument("-i", "--input", required=True, help="folder of the labelled DICOM studies")
    parser.add_argument("--labels", required=True, help="labels CSV: StudyInstanceUID or SOPInstanceUID, task, label[, skin_type] (see the README)")
    parser.add_argument("-o", "--output", required=True, help="folder for the report (report.json, report.html, PNG figures)")
    parser.add_argument("-m", "--model", dest="models", help="folder holding the model directory 'biomedclip/' (default: $HOLOSCAN_MODEL_PATH, else ./models)")
    parser.add_argument("-w", "--workdir", help="work folder for caches and the salt of the case references (default: $HOLOSCAN_WORKDIR, else a folder in the system temp dir)")
    parser.add_argument("--allow-untrained", action="store_true", help="accept a model whose status is 'untrained' (the report says its figures measure chance only)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, help="force an inference backend (default: auto; also BIOMEDCLIP_MAP_BACKEND)")
    parser.add_argument("--rules", help="selection rules JSON; default: the bundled rules (use the site's MAP configuration)")
    parser.add_argument("--tasks", help="zero-shot task YAML; default: the bundled tasks (use the site's MAP configuration)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help=f"bootstrap resamples of the AUROC interval (default: {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the bootstrap (default: {DEFAULT_SEED})")
    parser.add_argument("--adapter", help="validate with this site adapter ('biomedclip-map adapt'); use studies it was not fitted on")
    parser.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")


def validate_from_args(args: argparse.Namespace) -> int:
    """Resolve the settings, validate once; the exit code (see `app.validation.command`)."""
    from app.validation.command import validate
    from app.validation.metrics import MetricSettings

    if args.bootstrap < 1:
        logger.error("cannot start: --bootstrap %d: give at least 1 resample", args.bootstrap)
        return EXIT_CANNOT_START
    try:
        settings = resolve_run_settings(
            input_path=args.input, output_path=args.output, models_path=args.models, work_dir=args.workdir,
            allow_untrained=args.allow_untrained, backend=args.backend, selection_rules=args.rules, tasks=args.tasks,
            adapter=args.adapter,
        )
    except SettingsError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    metrics = MetricSettings(bootstrap=args.bootstrap, seed=args.seed)
    return validate(settings, Path(args.labels), Path(args.output), metrics).exit_code


def add_adapt_arguments(parser: argparse.ArgumentParser) -> None:
    """`adapt`: labelled studies in, a site adapter (linear probes on the frozen embeddings) out."""
    parser.add_argument("-i", "--input", required=True, help="folder of the labelled DICOM studies to fit on (keep others apart to validate)")
    parser.add_argument("--labels", required=True, help="labels CSV, the same format as for validate")
    parser.add_argument("-o", "--output", required=True, help="folder for the adapter (adapter.json)")
    parser.add_argument("-m", "--model", dest="models", help="folder holding the model directory 'biomedclip/' (default: $HOLOSCAN_MODEL_PATH, else ./models)")
    parser.add_argument("-w", "--workdir", help="work folder for caches (the embeddings are cached there) and the salt (default: $HOLOSCAN_WORKDIR)")
    parser.add_argument("--allow-untrained", action="store_true", help="accept a model whose status is 'untrained'")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, help="force an inference backend (default: auto)")
    parser.add_argument("--rules", help="selection rules JSON; default: the bundled rules (use the site's MAP configuration)")
    parser.add_argument("--tasks", help="zero-shot task YAML; default: the bundled tasks (use the site's MAP configuration)")
    parser.add_argument("--name", default="site-adapter", help="the adapter's name (default: site-adapter)")
    parser.add_argument("--version", dest="adapter_version", default="1", help="the adapter's version (default: 1)")
    parser.add_argument("--c", type=float, default=1.0, help="inverse regularisation strength of the logistic regression (default: 1.0)")
    parser.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")


def adapt_from_args(args: argparse.Namespace) -> int:
    """Resolve the settings and fit the adapter; the exit code (see `app.validation.adaptation`)."""
    from app.validation.adaptation import adapt

    if args.c <= 0:
        logger.error("cannot start: --c %s: give a positive number", args.c)
        return EXIT_CANNOT_START
    try:
        settings = resolve_run_settings(
            input_path=args.input, output_path=args.output, models_path=args.models, work_dir=args.workdir,
            allow_untrained=args.allow_untrained, backend=args.backend, selection_rules=args.rules, tasks=args.tasks,
        )
    except SettingsError as exc:
        logger.error("cannot start: %s", exc)
        return EXIT_CANNOT_START
    return adapt(settings, Path(args.labels), Path(args.output), name=args.name, version=args.adapter_version, c=args.c)


def add_drift_arguments(parser: argparse.ArgumentParser) -> None:
    """`drift`: recent audit records against the validation report, one line verdict."""
    from app.validation.drift import INDETERMINATE_INCREASE, PSI_LIMIT

    parser.add_argument("--report", required=True, help="report.json written by 'biomedclip-map validate' for the model in use")
    parser.add_argument("--audit-log", required=True, help="the MAP's or node's audit log (JSON lines)")
    parser.add_argument("--operating-points", help="the site's operating points file: also compare the share of indeterminate results")
    parser.add_argument("--last", type=int, default=500, help="compare the last N analysed studies of these weights (default: 500)")
    parser.add_argument("--psi-limit", type=float, default=PSI_LIMIT, help=f"population stability index that counts as moved (default: {PSI_LIMIT})")
    parser.add_argument("--indeterminate-increase", type=float, default=INDETERMINATE_INCREASE, help=f"growth of the indeterminate share that counts as moved (default: {INDETERMINATE_INCREASE})")
    parser.add_argument("-l", "--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: WARNING)")


def add_operating_points_arguments(parser: argparse.ArgumentParser) -> None:
    """`operating-points`: a validation report in, the site's thresholds out."""
    parser.add_argument("--report", required=True, help="report.json written by 'biomedclip-map validate'")
    parser.add_argument("--method", required=True, help="how to choose each label's threshold: youden, sensitivity:T (e.g. sensitivity:0.9) or specificity:T")
    parser.add_argument("--band", type=float, default=0.05, help="probabilities within this distance of a threshold are indeterminate (default: 0.05)")
    parser.add_argument("--min-top1-margin", dest="min_top1_margin", type=float, default=0.0, help="below this gap between the two most probable labels, every label is indeterminate (default: 0, off)")
    parser.add_argument("-o", "--output", required=True, help="site operating points file to write (JSON)")
    parser.add_argument("-l", "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (default: INFO)")


def operating_points_from_args(args: argparse.Namespace) -> int:
    """Choose the operating points from the report and write the site file; 0 written, 2 refused."""
    from app.validation.operating_points import Method, ReportReadError, choose_operating_points, write_operating_points
    from common.operating_points import OperatingPointsError

    try:
        method = Method.parse(args.method)
        if not 0 <= args.band < 0.5 or not 0 <= args.min_top1_margin < 1:
            raise ValueError("--band must be in [0, 0.5) and --min-top1-margin in [0, 1)")
        document = choose_operating_points(Path(args.report), method, band=args.band, min_top1_margin=args.min_top1_margin)
    except (ValueError, ReportReadError, OperatingPointsError) as exc:
        logger.error("cannot choose operating points: %s", exc)
        return EXIT_CANNOT_START
    path = write_operating_points(document, Path(args.output))
    for task, entry in document["tasks"].items():
        for label, point in entry["labels"].items():
            logger.info("%s / %s: threshold %.4f (sensitivity %.2f, specificity %.2f on %d+%d validation cases)", task, label,
                        point["threshold"], point["sensitivity"], point["specificity"], point["positives"], point["negatives"])
        for label, reason in entry["not_set"].items():
            logger.warning("%s / %s: no operating point: %s", task, label, reason)
    logger.info("site operating points written to %s", path)
    return EXIT_OK


def map_main(argv: Sequence[str] | None = None) -> int:
    """`python -m app` / `python3 app`: the MAP run contract, exactly as a MAP host invokes it."""
    parser = argparse.ArgumentParser(prog="python -m app", description=f"{APP_NAME} {__version__}: MAP run")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run_from_args(args)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The `serve` flags; each overrides the same setting of the configuration file."""
    parser.add_argument("--config", type=Path, help="node configuration YAML (see README, 'Connect to your PACS')")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and the paths it names, print a summary, exit")
    parser.add_argument("--ae-title", help="AE title of the node (dicom.ae_title; default BIOMEDCLIP)")
    parser.add_argument("--bind", help="address to listen on (dicom.bind; default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="DICOM port (dicom.port; default 11112)")
    parser.add_argument("--models", help="folder holding the model directory 'biomedclip/' (processing.models)")
    parser.add_argument("--spool", help="spool folder for received studies, the queue and the outbox (spool.path)")
    parser.add_argument(
        "--destination", action="append", metavar="AE@HOST:PORT",
        help="send results by C-STORE to this AE (repeatable; replaces the file's destinations)",
    )
    parser.add_argument(
        "--allow-calling-ae", action="append", metavar="AE",
        help="accept associations from this calling AE title (repeatable; replaces dicom.allow_calling_aes)",
    )
    parser.add_argument("--http-port", type=int, help="loopback port of /healthz, /readyz, /metrics (http.port; default 8787)")
    parser.add_argument("--allow-untrained", action="store_true", help="accept a model whose status is 'untrained' (processing.allow_untrained)")
    parser.add_argument("--backend", help=f"inference backend: {', '.join(BACKEND_CHOICES)} (processing.backend)")
    parser.add_argument("-l", "--log-level", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging level (log_level; default INFO)")


def serve_request(args: argparse.Namespace) -> ServeRequest:
    """The parsed `serve` flags as a typed request (each given flag overrides the configuration file)."""
    overrides = {
        "ae_title": args.ae_title,
        "bind": args.bind,
        "port": args.port,
        "models": args.models,
        "spool": args.spool,
        "destination": args.destination,
        "allow_calling_ae": args.allow_calling_ae,
        "http_port": args.http_port,
        "allow_untrained": args.allow_untrained,
        "backend": args.backend,
        "log_level": args.log_level,
    }
    return ServeRequest(config=args.config, overrides=overrides, check_config=args.check_config)


def main(argv: Sequence[str] | None = None) -> int:
    """`biomedclip-map run|demo|serve|validate ...` for people."""
    parser = argparse.ArgumentParser(prog=APP_NAME, description="BiomedCLIP zero-shot analysis of DICOM studies, returned as DICOM SR")
    parser.add_argument("--version", action="version", version=f"{APP_NAME} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_arguments(commands.add_parser("run", help="analyse the studies of an input folder (the MAP contract)"))
    demo = commands.add_parser("demo", help="build the sample studies and run the MAP on each, then print a summary")
    demo.add_argument("--output", default="demo-output", help="folder for the samples and results (default: ./demo-output)")
    demo.add_argument("--models", default="model-store", help="models folder; real BiomedCLIP weights in MODELS/biomedclip are used if present (default: ./model-store)")
    demo.add_argument("--backend", choices=BACKEND_CHOICES, help="force an inference backend")
    demo.add_argument("-l", "--log-level", default="WARNING", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_serve_arguments(commands.add_parser("serve", help="run as a DICOM node: receive studies from PACS, analyse each, send the results back"))
    add_validate_arguments(commands.add_parser("validate", help="measure the analysis on labelled studies of this site: a validation report, no DICOM written"))
    add_operating_points_arguments(commands.add_parser("operating-points", help="choose a threshold per label from a validation report and write the site operating points file"))
    add_adapt_arguments(commands.add_parser("adapt", help="fit a site adapter (linear probe per task on the frozen image embeddings) on labelled studies"))
    add_drift_arguments(commands.add_parser("drift", help="say in one line whether the model's behaviour moved since its validation (audit log against the validation report)"))
    args = parser.parse_args(argv)
    if args.command == "serve":
        from app.node.command import serve_main

        return serve_main(serve_request(args))
    configure_logging(args.log_level)
    if args.command == "run":
        return run_from_args(args)
    if args.command == "validate":
        return validate_from_args(args)
    if args.command == "operating-points":
        return operating_points_from_args(args)
    if args.command == "adapt":
        return adapt_from_args(args)
    if args.command == "drift":
        from app.validation.drift import drift

        if args.last < 1:
            logger.error("cannot start: --last %d: give at least 1", args.last)
            return EXIT_CANNOT_START
        return drift(Path(args.report), Path(args.audit_log), last=args.last, psi_limit=args.psi_limit,
                     indeterminate_increase=args.indeterminate_increase,
                     operating_points=Path(args.operating_points) if args.operating_points else None)
    from app.demo import run_demo

    return run_demo(Path(args.output), Path(args.models), backend=args.backend)


if __name__ == "__main__":
    sys.exit(main())
