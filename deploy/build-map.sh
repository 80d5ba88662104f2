#!/usr/bin/env bash
# Build the biomedclip-map MAP (MONAI Application Package) with holoscan-cli's packager.
#
#   deploy/build-map.sh [--model DIR] [--cuda 13|12] [--platform x86_64|igx-dgpu|igx-igpu|jetson|sbsa]
#                       [--out DIR] [--tag NAME:VERSION] [--tarball DIR] [--allow-untrained] [--dry-run]
#
# Steps:
#   1. stage the application folder and the models folder (deploy/stage_map.py): exactly what the
#      packager copies to /opt/holoscan/app and /opt/holoscan/models, the model folder prepared as
#      `python -m app.engine_commands quantize` prepares it (ONNX export, ONNX Runtime and OpenVINO
#      INT8 graphs, parity gate records for this build machine's CPU kind, bundled tasks' text
#      embeddings; minutes on a full-size model), so the MAP exports, quantises and gates nothing
#      on CPUs of that kind;
#   2. run `holoscan package` on them (holoscan-cli pinned below 4.3: 4.3 dropped MAP packaging).
# --dry-run stops after rendering the packager's Docker build context into OUT/context (Dockerfile,
# app.json, pkg.json) and needs no Docker engine. See deploy/README.md for running and inspecting
# the image.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
HOLOSCAN=${HOLOSCAN:-.venv/bin/holoscan}
MODEL=model-store
CUDA=13
PLATFORM=x86_64
OUT=build/map
TAG=
TARBALL=
DRY_RUN=0
STAGE_FLAGS=()

say() { printf '[build-map] %s\n' "$*" >&2; }
usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --cuda) CUDA=$2; shift 2 ;;
        --platform) PLATFORM=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --tarball) TARBALL=$2; shift 2 ;;
        --allow-untrained) STAGE_FLAGS+=(--allow-untrained); shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage ;;
        *) say "unknown option: $1"; usage ;;
    esac
done

if [[ ! -x "$PYTHON" ]]; then
    say "no Python environment at $PYTHON; run ./run setup first (or set PYTHON=/path/to/python)"
    exit 2
fi
# The packager must be holoscan-cli 4.2.x: 4.3 and later no longer build MAPs.
"$PYTHON" - <<'EOF'
import importlib.metadata, sys
from packaging.version import Version
found = Version(importlib.metadata.version("holoscan-cli"))
if not Version("4.2") <= found < Version("4.3"):
    sys.exit(f"[build-map] holoscan-cli {found} is installed; MAP packaging needs holoscan-cli>=4.2,<4.3 (pip install holoscan-cli==4.2.0)")
EOF
if [[ -z "$TAG" ]]; then
    VERSION=$("$PYTHON" -c 'import yaml; print(yaml.safe_load(open("app.yaml"))["application"]["version"])')
    TAG="biomedclip-map:$VERSION"
fi
if [[ -e "$OUT" ]]; then
    say "$OUT already exists; remove it or choose another --out"
    exit 2
fi
if [[ $DRY_RUN -eq 0 ]] && ! docker info >/dev/null 2>&1; then
    say "no Docker engine answers (docker info failed); install Docker with the NVIDIA Container Toolkit, or use --dry-run"
    exit 2
fi

CONTEXT_FLAG=()
[[ $DRY_RUN -eq 1 ]] && CONTEXT_FLAG=(--context)
TARBALL_FLAG=()
[[ -n "$TARBALL" ]] && { mkdir -p "$TARBALL"; TARBALL_FLAG=(--tarball "$TARBALL"); }

say "staging the application and the model ($MODEL) into $OUT (CUDA $CUDA, platform $PLATFORM)"
ARGS_JSON=$("$PYTHON" deploy/stage_map.py --out "$OUT" --model "$MODEL" --cuda "$CUDA" --platform "$PLATFORM" \
    --tag "$TAG" "${STAGE_FLAGS[@]}" "${CONTEXT_FLAG[@]}" "${TARBALL_FLAG[@]}")
mapfile -t PACKAGE_ARGS < <("$PYTHON" -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$ARGS_JSON")

if [[ $DRY_RUN -eq 1 ]]; then
    say "dry run: the packager's build context is in $OUT/context; the build command would be:"
    printf '%q ' "$HOLOSCAN" package "${PACKAGE_ARGS[@]}" >&2
    printf '\n' >&2
    exit 0
fi

say "holoscan package ${PACKAGE_ARGS[*]}"
"$HOLOSCAN" package "${PACKAGE_ARGS[@]}"
say "done; inspect with: docker run --rm <image> show   (see deploy/README.md)"
