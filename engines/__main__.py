"""`python -m engines` moved: the engine commands are `python -m app.engine_commands ...`.

They need the application's sample studies and preprocessing (the parity gate's probe set) and
the MAP's folder conventions, which the engines layer does not import; this stub only says where
the commands went, so an old script fails with an actionable line instead of a traceback.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Print where the engine commands are now; exit status 2."""
    command = " ".join(["python -m app.engine_commands", *(sys.argv[1:] if argv is None else argv)])
    print(f"the engine commands moved: run `{command}`", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
