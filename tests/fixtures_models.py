"""Model fixtures shared by the test suite.

`tiny_model_dir` is a BiomedCLIP-architecture model folder with random weights (status
`untrained`), built once per test session by `python -m models build-tiny`'s code. It is the model
folder itself (`<models>/biomedclip`), so tests can pass it or its parent wherever a model path is
expected. Treat it as read-only: copy it (shutil.copytree) to test changes to a model folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained BiomedCLIP-architecture model folder, built once per session."""
    from models.builders import build_tiny

    destination = tmp_path_factory.mktemp("models") / "biomedclip"
    build_tiny(destination, seed=0)
    return destination
