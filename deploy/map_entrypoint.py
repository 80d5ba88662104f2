"""Entry point of the packaged MAP; staged as `/opt/holoscan/app/__main__.py` by deploy/stage_map.py.

The MAP's `app.json` command is `python3 /opt/holoscan/app`: Python runs this file with the
application folder itself first on `sys.path`. That folder holds the product's packages (`app`,
`operators`, `models`, `engines`) next to this file, so they import from there and nothing
outside the folder the packager copied is needed (the third-party libraries come from the MAP's
requirements.txt). In the source tree the same contract is `python3 app` from the repository
root (app/__main__.py).
"""

import sys

from app.cli import map_main

sys.exit(map_main())
