"""Run a module as `python -m MODULE ARGS...` with only loopback connections allowed.

    python -m tests.guarded_run models fetch biomedclip DIR
    python -m tests.guarded_run huggingface_hub.cli.hf download REPO ...

For tests that start real commands in a subprocess against a server on 127.0.0.1: any other
connection or DNS lookup raises NetworkAccessAttempted and the command fails.
"""

from __future__ import annotations

import runpy
import sys

from tests.network_guard import install

if __name__ == "__main__":
    install(setattr, [], allow_loopback=True)
    module, *arguments = sys.argv[1:]
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
