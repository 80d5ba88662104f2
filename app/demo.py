"""The demo: sample studies built by code, the MAP run on each, a summary a person can read.

Real BiomedCLIP weights are used when `MODELS/biomedclip` holds them (fetched with
`python -m models fetch biomedclip MODELS/biomedclip`); otherwise a tiny model of the same
architecture is built locally, and everything the demo prints and writes says it is UNTRAINED.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from app.analyzer import open_analyzer
from app.run import EXIT_CANNOT_START, EXIT_OK, EXIT_STUDY_FAILED, run
from app.sample_studies import build_sample_studies
from app.settings import SettingsError, resolve_run_settings
from common.zero_shot_tasks import TaskConfigError
from engines.base import BackendUnavailable
from engines.selection import BackendConfigError
from models.errors import ModelDirectoryError
from operators.messages import OutputKind

logger = logging.getLogger("biomedclip_map.demo")

UNTRAINED_BANNER = (
    "NOTE: no BiomedCLIP weights found in {models}/biomedclip — this demo uses a locally built, "
    "UNTRAINED model of the same architecture. Its findings are meaningless. For real results run:\n"
    "      .venv/bin/python -m models fetch biomedclip {models}/biomedclip"
)


def choose_demo_model(models_root: Path) -> tuple[Path, bool]:
    """The model directory the demo uses, and whether it is an untrained stand-in.

    Uses `models_root/biomedclip` when it holds a model whose manifest is not `untrained`;
    otherwise builds (once) a tiny untrained model under `models_root/untrained-tiny/biomedclip`.
    """
    from models.builders import build_tiny
    from models.errors import ManifestError
    from models.manifest import read_manifest

    real = models_root / "biomedclip"
    try:
        if read_manifest(real).status != "untrained":
            return real, False
    except ManifestError:
        pass
    stand_in = models_root / "untrained-tiny" / "biomedclip"
    try:
        read_manifest(stand_in)
    except ManifestError:
        build_tiny(stand_in)
    return stand_in, True


def write_previews(captures: list[Path], folder: Path) -> list[Path]:
    """A PNG of each Secondary Capture file, written into `folder`."""
    from operators.captures.secondary_capture import write_png_preview

    return [write_png_preview(p, folder / f"{p.stem}.png") for p in captures]


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def run_demo(output: Path, models_root: Path, *, backend: str | None = None) -> int:
    """Build the samples, run the MAP on each sample study folder, print a per-study summary."""
    samples_dir = output / "samples"
    results_dir = output / "results"
    studies = build_sample_studies(samples_dir)
    model_dir, untrained = choose_demo_model(models_root)
    if untrained:
        print(UNTRAINED_BANNER.format(models=models_root))

    rows: list[list[str]] = []
    worst = EXIT_OK
    analyzer = None
    for study in studies:
        study_output = results_dir / study.name
        shutil.rmtree(study_output, ignore_errors=True)
        try:
            settings = resolve_run_settings(
                input_path=study.path, output_path=study_output, models_path=model_dir, work_dir=output / "work",
                allow_untrained=untrained, backend=backend, results_json_dir=output / "json" / study.name,
            )
            if analyzer is None:
                analyzer = open_analyzer(settings)  # one warm model for every sample
        except (SettingsError, ModelDirectoryError, TaskConfigError, BackendUnavailable, BackendConfigError) as exc:
            print(f"the demo cannot start: {exc}")
            return EXIT_CANNOT_START
        report = run(settings, analyzer)
        worst = max(worst, report.exit_code)
        if not report.outcomes:
            rows.append([study.name, "-", report.start_error or report.error or "run failed (see log)", "-", f"{report.seconds:.2f} s"])
        for outcome in report.outcomes:
            selected = ", ".join(dict.fromkeys(f.selection for f in outcome.findings)) or "-"
            findings = "; ".join(f.text for f in outcome.findings) or outcome.reason
            reports = outcome.files(OutputKind.REPORT)
            rows.append([study.name, selected, findings, str(reports[0]) if reports else "-", f"{report.seconds:.2f} s"])
            write_previews(outcome.files(OutputKind.CAPTURE), output / "previews" / study.name)

    print()
    print(_table(rows, ["study", "selected", "top findings", "SR", "time"]))
    print()
    print(f"DICOM results: {results_dir}   JSON results: {output / 'json'}")
    print(f"Viewable images (Secondary Captures) as PNG: {output / 'previews'}")
    if untrained:
        print("UNTRAINED MODEL — the findings above are NOT MEANINGFUL.")
    if worst == EXIT_CANNOT_START:
        return EXIT_CANNOT_START
    return EXIT_STUDY_FAILED if worst else EXIT_OK
