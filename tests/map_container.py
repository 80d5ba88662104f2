"""Running the packaged MAP as its container does, without a container engine: as uid 1000, isolated.

A MAP image runs `python3 /opt/holoscan/app` as the user `holoscan` (uid 1000), with the
third-party libraries installed from the MAP's requirements.txt and nothing else. The tests
reproduce that with:

- `AppUserPython`: an interpreter uid 1000 can execute, whose import path holds the development
  environment's third-party libraries but *not* this repository (the editable install's import
  hook is not loaded), so the product can only be imported from the staged application folder;
- `run_as_app_user`: the command run under `setpriv` as uid/gid 1000 with no supplementary
  groups and a clean environment.

When the base interpreter lives where uid 1000 cannot reach it (a Python installed under /root,
say), its standard library is hard-linked (or copied) into a folder uid 1000 can read, and the
shared libpython is found through LD_LIBRARY_PATH, which the dynamic loader searches before the
interpreter's built-in RUNPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

APP_UID = 1000
APP_GID = 1000
SETPRIV = ("setpriv", f"--reuid={APP_UID}", f"--regid={APP_GID}", "--clear-groups", "--")


def can_switch_to_app_user() -> str | None:
    """None if this process can run commands as uid 1000, else the reason it cannot."""
    if os.geteuid() != 0:
        return "switching to uid 1000 needs root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    return None


def _runs_as_app_user(executable: Path, env: dict[str, str]) -> bool:
    probe = subprocess.run([*SETPRIV, str(executable), "-c", "pass"], env=env, capture_output=True, timeout=60)
    return probe.returncode == 0


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


@dataclass(frozen=True)
class AppUserPython:
    """`python3` for uid 1000: `executable`, run with `env` (LD_LIBRARY_PATH where needed)."""

    executable: Path
    env: dict[str, str] = field(default_factory=dict)


def build_app_user_python(folder: Path) -> AppUserPython:
    """Create, in the new world-readable `folder`, a virtual environment uid 1000 can run.

    Its site-packages holds one `.pth` line naming this environment's site-packages: the
    libraries are importable, but the `.pth` files inside that folder (the editable install of
    this repository among them) are not processed, so `import app` finds only what is on the
    command's own path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    folder.chmod(0o755)
    base_executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    base_prefix = Path(sys.base_prefix)
    env: dict[str, str] = {}
    if not _runs_as_app_user(base_executable, {"PATH": "/usr/bin:/bin"}):
        prefix = folder / "base"
        (prefix / "bin").mkdir(parents=True)
        (prefix / "lib").mkdir()
        _link_or_copy(str(base_executable), str(prefix / "bin" / base_executable.name))
        library_dir = base_prefix / "lib"
        for library in library_dir.glob("libpython*.so*"):
            _link_or_copy(str(library), str(prefix / "lib" / library.name))
        stdlib = f"python{sysconfig.get_python_version()}"
        shutil.copytree(
            library_dir / stdlib, prefix / "lib" / stdlib, copy_function=_link_or_copy,
            ignore=shutil.ignore_patterns("site-packages", "test", "idle_test"),
        )
        (prefix / "lib" / stdlib / "site-packages").mkdir()
        base_executable = prefix / "bin" / base_executable.name
        env["LD_LIBRARY_PATH"] = str(prefix / "lib")
    venv = folder / "venv"
    subprocess.run([str(base_executable), "-m", "venv", "--without-pip", str(venv)], env={"PATH": "/usr/bin:/bin", **env}, check=True, timeout=120)
    site_packages = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip())
    libraries = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    (site_packages / "development-libraries.pth").write_text("\n".join(libraries) + "\n", encoding="utf-8")
    python = AppUserPython(venv / "bin" / "python", env)
    if not _runs_as_app_user(python.executable, {"PATH": "/usr/bin:/bin", **env}):
        raise RuntimeError(f"uid {APP_UID} still cannot run {python.executable}; check the permissions of its folders")
    return python


def run_as_app_user(command: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `command` as uid/gid 1000 with no supplementary groups and exactly `env`."""
    return subprocess.run([*SETPRIV, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def chown_tree(path: Path, uid: int = APP_UID, gid: int = APP_GID) -> None:
    """`chown -R uid:gid path`, as the MAP's Dockerfile does for the folders the application writes."""
    for current, folders, files in os.walk(path):
        os.chown(current, uid, gid)
        for name in files:
            os.chown(os.path.join(current, name), uid, gid, follow_symlinks=False)


def make_read_only(path: Path) -> None:
    """Owned by root, folders r-x and files r-- for everyone: uid 1000 can read but change nothing."""
    for current, folders, files in os.walk(path):
        os.chown(current, 0, 0)
        os.chmod(current, 0o555)
        for name in files:
            file = os.path.join(current, name)
            os.chown(file, 0, 0)
            os.chmod(file, 0o444)

