"""Staging the MAP: exactly what `holoscan package` puts at /opt/holoscan/app and /opt/holoscan/models.

`holoscan package APP_DIR --models MODELS_DIR ...` (holoscan-cli 4.2.x) copies APP_DIR to
`/opt/holoscan/app`, installs `APP_DIR/requirements.txt` with pip, copies each sub-folder of
MODELS_DIR to `/opt/holoscan/models/<name>`, and runs the application as `python3
/opt/holoscan/app` (its `app.json` command) as the user `holoscan` (uid 1000) in
`/var/holoscan`. This module assembles APP_DIR and MODELS_DIR from the repository, so the build
script and the MAP-contract test use one and the same tree:

    <out>/app/__main__.py          deploy/map_entrypoint.py (python3 /opt/holoscan/app runs it)
    <out>/app/common/ app/ operators/ models/ engines/   the product's packages, without caches
    <out>/app/requirements.txt     requirements.txt, with the Holoscan wheel for the chosen CUDA
    <out>/models/biomedclip/       the model folder, prepared: onnx/ holds the ONNX export, the INT8
                                   graphs, this build CPU's gate records and the text embeddings

`--add` is deliberately not used: the packager copies the *contents* of each added folder into
`/opt/holoscan/lib` and puts every sub-folder on PYTHONPATH, which would flatten the packages and
let their modules shadow libraries.

It also renders the packager's own Docker build context offline (`render_build_context`: the
Dockerfile, app.json and pkg.json that holoscan-cli generates, with no Docker engine involved) and
lays that context out as the image would hold it (`install_build_context`), which is how the test
runs the MAP the way its container would.

    python deploy/stage_map.py --model model-store --out build/map [--cuda 13] [--context]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = REPO_ROOT / "deploy" / "map_entrypoint.py"
APP_CONFIG = REPO_ROOT / "app.yaml"
ARTIFACT_SOURCES = REPO_ROOT / "deploy" / "holoscan-artifacts"
PRODUCT_PACKAGES = ("common", "app", "operators", "models", "engines")
MODEL_NAME = "biomedclip"
IMAGE_NAME = "biomedclip-map"
HOLOSCAN_WHEELS = {12: "holoscan-cu12", 13: "holoscan-cu13"}
SDK_FOR_CUDA = {13: "monai-deploy", 12: "holoscan"}
"""monai-deploy-app-sdk 4.0 depends on holoscan-cu13, so a CUDA 12 MAP is packaged with the Holoscan SDK type."""
MONAI_DEPLOY_REQUIREMENT = "monai-deploy-app-sdk"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")


class StagingError(RuntimeError):
    """The MAP cannot be staged; the message names the file, folder or setting."""


@dataclass(frozen=True)
class StagedMap:
    """A staged application folder and models folder, ready for `holoscan package`."""

    app_dir: Path
    models_dir: Path | None
    cuda: int


def staged_requirements(text: str, cuda: int) -> str:
    """requirements.txt for the MAP: the Holoscan wheel matching `cuda`; for CUDA 12 without the MONAI Deploy SDK.

    The product pins `holoscan-cu13`; a CUDA 12 image needs `holoscan-cu12` of the same version.
    monai-deploy-app-sdk 4.0 requires holoscan-cu13, and the application does not import it at
    run time, so it is left out of a CUDA 12 image rather than installing both Holoscan wheels.
    """
    if cuda not in HOLOSCAN_WHEELS:
        raise StagingError(f"CUDA {cuda} is not supported; choose one of {', '.join(map(str, HOLOSCAN_WHEELS))}")
    lines, found = [], False
    for line in text.splitlines():
        name = re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0].lower()
        if name in HOLOSCAN_WHEELS.values():
            found = True
            line = re.sub(r"^holoscan-cu1[23]", HOLOSCAN_WHEELS[cuda], line.strip())
        elif cuda == 12 and name == MONAI_DEPLOY_REQUIREMENT:
            lines.append(f"# {line.strip()}  (left out of the CUDA 12 MAP: it requires holoscan-cu13)")
            continue
        lines.append(line)
    if not found:
        raise StagingError("requirements.txt pins no Holoscan wheel (holoscan-cu12 or holoscan-cu13)")
    return "\n".join(lines) + "\n"


def stage_application(destination: Path, *, cuda: int = 13, repo_root: Path = REPO_ROOT) -> Path:
    """Assemble the application folder `holoscan package` takes, in the new folder `destination`."""
    destination = Path(destination)
    if destination.exists():
        raise StagingError(f"{destination} already exists; stage into a new folder")
    requirements = staged_requirements((repo_root / "requirements.txt").read_text(encoding="utf-8"), cuda)
    destination.mkdir(parents=True)
    shutil.copyfile(ENTRYPOINT, destination / "__main__.py")
    for package in PRODUCT_PACKAGES:
        source = repo_root / package
        if not (source / "__init__.py").is_file():
            raise StagingError(f"{source} is not a Python package; the MAP needs {', '.join(PRODUCT_PACKAGES)}")
        shutil.copytree(source, destination / package, ignore=_IGNORED)
    (destination / "requirements.txt").write_text(requirements, encoding="utf-8")
    return destination


def stage_models(model_path: Path, destination: Path, *, prepare: bool = True, allow_untrained: bool = False) -> Path:
    """Copy the model folder into `destination/biomedclip` (the folder given to `--models`), verified and prepared.

    Files are hard-linked where the file system allows (the weights are large) and copied
    otherwise. With `prepare` the model's `onnx/` folder is filled as `python -m
    app.engine_commands quantize` fills it (`prepare_model_folder`): the checked ONNX export, the
    ONNX Runtime and OpenVINO INT8 image graphs, the parity gate records of every fast CPU path
    that this build machine's CPU offers, and the bundled tasks' text embeddings. A MAP run on a
    CPU of this kind then exports, quantises and gates nothing and loads no text tower for the
    bundled tasks (one log line says so when a run's CPU is of another kind, which gates once).
    An untrained model is refused unless `allow_untrained` (tests, demonstrations).
    """
    import tempfile

    from models.directory import locate_model_dir, open_model_dir
    from models.errors import ModelDirectoryError

    destination = Path(destination)
    if destination.exists():
        raise StagingError(f"{destination} already exists; stage into a new folder")
    try:
        source = open_model_dir(locate_model_dir(Path(model_path)), allow_untrained=allow_untrained)
    except ModelDirectoryError as exc:
        raise StagingError(f"the model cannot be packaged: {exc}") from exc
    target = destination / MODEL_NAME
    destination.mkdir(parents=True)

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source.path, target, copy_function=link_or_copy, ignore=_IGNORED)
    if prepare:
        from app.engine_commands import prepare_model_folder

        model = open_model_dir(target, allow_untrained=True)
        _replace_unusable_export(model)
        with tempfile.TemporaryDirectory(prefix="stage-map-work-") as work:
            try:
                prepare_model_folder(model, Path(work))
            except Exception as exc:  # the engines raise their own types; each message says what failed
                raise StagingError(f"the model folder cannot be prepared for the MAP ({type(exc).__name__}: {exc})") from exc
    return destination


def _replace_unusable_export(model) -> None:
    """Remove a copied `onnx/` folder whose export does not match the weights, so it is made again, never shipped."""
    from engines.onnx_files import onnx_folder_problem

    folder = model.shipped_onnx_dir
    if folder.exists() and onnx_folder_problem(folder, model.sha256) is not None:
        shutil.rmtree(folder)


def stage_map(out: Path, *, model_path: Path | None, cuda: int = 13, prepare: bool = True, allow_untrained: bool = False) -> StagedMap:
    """Stage the application folder (`out/app`) and, if a model is given, the models folder (`out/models`)."""
    out = Path(out)
    app_dir = stage_application(out / "app", cuda=cuda)
    models_dir = None
    if model_path is not None:
        models_dir = stage_models(model_path, out / "models", prepare=prepare, allow_untrained=allow_untrained)
    return StagedMap(app_dir, models_dir, cuda)


def package_arguments(
    staged: StagedMap,
    *,
    tag: str,
    platform: str = "x86_64",
    config: Path = APP_CONFIG,
    source: Path = ARTIFACT_SOURCES,
    output: Path | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The arguments of `holoscan package` for `staged` (after the word `package`).

    `--sdk` is monai-deploy for CUDA 13 and holoscan for CUDA 12 (see `SDK_FOR_CUDA`); `--source`
    is the packager manifest in deploy/holoscan-artifacts, which maps the pinned Holoscan version
    to its base image (holoscan-cli 4.2 otherwise downloads a manifest that only knows 4.2.0).
    """
    arguments = [
        str(staged.app_dir),
        "--config", str(config),
        "--platform", platform,
        "--cuda", str(staged.cuda),
        "--sdk", SDK_FOR_CUDA[staged.cuda],
        "--source", str(source),
        "--tag", tag,
        "--uid", "1000",
        "--gid", "1000",
    ]
    if staged.models_dir is not None:
        arguments += ["--models", str(staged.models_dir)]
    if output is not None:
        arguments += ["--output", str(output)]
    return arguments + list(extra)


@dataclass(frozen=True)
class BuildContext:
    """The Docker build context holoscan-cli generates: the folder, its Dockerfile and manifests."""

    folder: Path
    dockerfile: str
    app_json: dict
    pkg_json: dict


def render_build_context(staged: StagedMap, context_dir: Path, *, tag: str = f"{IMAGE_NAME}:test", platform: str = "x86_64") -> BuildContext:
    """Run holoscan-cli's packager up to the point where it would call Docker, into `context_dir`.

    Uses the packager's own classes (argument parsing, app.json/pkg.json generation, the
    application/model/requirements copies and the Dockerfile template), so the result is what
    `holoscan package` builds the image from. Needs no Docker engine and no network (the manifest
    comes from `--source`).
    """
    import logging

    from holoscan_cli.packager.arguments import PackagingArguments
    from holoscan_cli.packager.container_builder import PythonAppBuilder
    from holoscan_cli.packager.package_command import create_package_parser
    from holoscan_cli.packager.packager import (
        _create_app_manifest,
        _create_package_manifest,
    )

    context_dir = Path(context_dir)
    context_dir.mkdir(parents=True, exist_ok=False)
    parser = argparse.ArgumentParser(prog="holoscan")
    create_package_parser(parser.add_subparsers(dest="command"), "package", [])
    extra = ("--build-cache", str(context_dir / ".build-cache"))
    args = parser.parse_args(["package", *package_arguments(staged, tag=tag, platform=platform, extra=extra)])
    logging.getLogger("packager").setLevel(logging.WARNING)
    logging.getLogger("common").setLevel(logging.WARNING)
    packaging = PackagingArguments(args, str(context_dir))
    _create_app_manifest(packaging.application_manifest, str(context_dir))
    _create_package_manifest(packaging.package_manifest, str(context_dir))
    builder = PythonAppBuilder(packaging.build_parameters, str(context_dir))
    builder._copy_supporting_files(packaging.platforms[0])
    dockerfile = Path(builder._write_dockerfile(packaging.platforms[0])).read_text(encoding="utf-8")
    return BuildContext(
        folder=context_dir,
        dockerfile=dockerfile,
        app_json=json.loads((context_dir / "map" / "app.json").read_text(encoding="utf-8")),
        pkg_json=json.loads((context_dir / "map" / "pkg.json").read_text(encoding="utf-8")),
    )


@dataclass
class InstalledMap:
    """A build context laid out under `root` as the image holds it (container path /x is `root`/x)."""

    root: Path
    environment: dict[str, str]
    """The HOLOSCAN_* variables the Dockerfile sets, as container paths."""
    working_dir: str
    command: list[str]
    """app.json's command, as container paths."""
    owned_by_app_user: list[str] = field(default_factory=list)
    """Container paths the Dockerfile gives to the application user (chown -R)."""

    def path(self, container_path: str) -> Path:
        """Where container path `container_path` lies under `root`."""
        return self.root / container_path.lstrip("/")


def _dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    pairs = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def install_build_context(context: BuildContext, root: Path) -> InstalledMap:
    """Lay out `context` under `root` the way its Dockerfile builds the image's file system.

    Follows the Dockerfile's instructions that shape the application's files: `RUN mkdir -p`
    and `RUN chown -R` of the MAP folders, every `COPY ./<src> <dest>` from the context (Docker
    semantics: a folder's contents go into the destination folder), `ENV HOLOSCAN_*` and the
    final `WORKDIR`. Package installation (`pip install`) is what the test replaces with the
    development environment's interpreter and libraries.
    """
    root = Path(root)
    environment: dict[str, str] = {}
    working_dir = "/"
    owned: list[str] = []
    for instruction, arguments in _dockerfile_instructions(context.dockerfile):
        if instruction == "ENV":
            key, _, value = arguments.partition("=")
            if key.startswith("HOLOSCAN_"):
                environment[key] = value
        elif instruction == "WORKDIR":
            working_dir = arguments
        elif instruction == "RUN":
            for folder in re.findall(r"mkdir -p (\S+)", arguments):
                (root / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
            owned += re.findall(r"chown -R \S+ (/\S+)", arguments)
        elif instruction == "COPY" and arguments.startswith("./"):
            source_text, destination = arguments.split()[:2]
            source = context.folder / source_text[2:]
            target = root / destination.lstrip("/")
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
            else:
                if destination.endswith("/"):
                    target = target / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    command = json.loads(context.app_json["command"])
    return InstalledMap(root, environment, working_dir, command, owned)


def main(argv: list[str] | None = None) -> int:
    """Stage the MAP for deploy/build-map.sh; print the `holoscan package` arguments as JSON."""
    parser = argparse.ArgumentParser(prog="python deploy/stage_map.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the staged MAP")
    parser.add_argument("--model", type=Path, required=True, help="model folder, or the models folder holding biomedclip/")
    parser.add_argument("--cuda", type=int, choices=sorted(HOLOSCAN_WHEELS), default=13, help="CUDA major version of the image (default 13)")
    parser.add_argument("--platform", default="x86_64", help="holoscan package --platform value (default x86_64)")
    parser.add_argument("--tag", default=f"{IMAGE_NAME}:0.1.0", help="image name and tag")
    parser.add_argument("--tarball", type=Path, default=None, help="also write the image as a tarball into this folder (needed for another architecture)")
    parser.add_argument("--allow-untrained", action="store_true", help="package an untrained model (demonstrations only)")
    parser.add_argument("--context", action="store_true", help="also render the packager's Docker build context into OUT/context (no Docker needed)")
    args = parser.parse_args(argv)
    try:
        staged = stage_map(args.out, model_path=args.model, cuda=args.cuda, allow_untrained=args.allow_untrained)
        if args.context:
            render_build_context(staged, args.out / "context", tag=args.tag, platform=args.platform)
    except StagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(package_arguments(staged, tag=args.tag, platform=args.platform, output=args.tarball)))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))
    sys.exit(main())
