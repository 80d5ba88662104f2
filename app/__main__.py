"""Entry point of the MAP: `python -m app ...` and `python3 app ...` (as a MAP host starts it)."""

import sys
from pathlib import Path

if not __package__:
    # Started as `python3 app` (a folder run as a script): Python puts this folder itself first on
    # the import path; put the folder that holds the product's packages there instead, so that
    # `app`, `operators`, `models` and `engines` import as packages and none of this folder's
    # modules shadows a library module.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from app.cli import map_main  # noqa: E402

sys.exit(map_main())
