#!/usr/bin/env bash
# Creates a virtualenv at the repository root and installs one tested OpenMMLab stack into it.
#
#   tools/setup_env.sh                    # .venv: torch 2.13.0, numpy 2.x (the default stack)
#   tools/setup_env.sh --stack torch2.1   # .venv-torch2.1: torch 2.1.2, numpy 1.26
#
# Both get mmcv 2.1.0 built from source with its ops, then requirements/mminstall.txt (mmengine
# 0.10.7, mmdet 3.3.0, mmpretrain 1.2.0, pycocotools), optional.txt, tests.txt (test and lint
# tools) and this package (editable). VENV=... overrides the folder. Idempotent: a second run
# only checks the stamp and returns in seconds. Why each step looks the way it does: see
# docs/installation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STACK=torch2.13
while [ $# -gt 0 ]; do
  case "$1" in
    --stack) STACK="${2:-}"; shift 2 || shift ;;
    --stack=*) STACK="${1#*=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[setup] unknown argument '$1'; usage: tools/setup_env.sh [--stack torch2.13|torch2.1]" >&2; exit 2 ;;
  esac
done
case "$STACK" in
  torch2.13) TORCH=2.13.0 TORCHVISION=0.28.0 NUMPY='numpy<2.5' SETUPTOOLS='setuptools>=77.0.3,<81'
             DEFAULT_VENV="$ROOT/.venv" ;;
  # setuptools < 70 for torch 2.1's cpp_extension; numpy 1.x for torch 2.1's wheels
  torch2.1)  TORCH=2.1.2 TORCHVISION=0.16.2 NUMPY='numpy<2' SETUPTOOLS='setuptools<70'
             DEFAULT_VENV="$ROOT/.venv-torch2.1" ;;
  *) echo "[setup] unknown stack '$STACK'; valid: torch2.13 (default), torch2.1" >&2; exit 2 ;;
esac
VENV="${VENV:-$DEFAULT_VENV}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.mmcondattn-stack"
# What the stamp certifies: the stack, and the content of this script, setup.py and the
# requirements files.
WANT=$( (echo "$STACK"; cat tools/setup_env.sh setup.py requirements/*.txt) 2>/dev/null \
  | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

log() { printf '[setup] %s\n' "$*"; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV (stack $STACK)"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --isolated --disable-pip-version-check)
# --isolated: ignore the machine's pip config and local wheel folder, whose CPU-only torch has
# no matching torchvision.
IPIP=("${PIP[@]}" install)

log "torch $TORCH + torchvision $TORCHVISION (registry builds; they run on CPU)"
"${IPIP[@]}" -q "torch==$TORCH" "torchvision==$TORCHVISION" "$NUMPY"

# Pin torch (and numpy) so no later requirement replaces them.
CONS="$VENV/constraints.txt"
printf 'torch==%s\ntorchvision==%s\n%s\n' "$TORCH" "$TORCHVISION" "$NUMPY" > "$CONS"

log "build tools for mmcv ($SETUPTOOLS: it still has pkg_resources)"
"${IPIP[@]}" -q -c "$CONS" "$SETUPTOOLS" wheel ninja packaging pyyaml addict yapf opencv-python pillow

# mmcv's compiled ops are tied to the torch they were built against, and pip's wheel cache
# does not record which: a cached wheel built for another torch installs, then fails at import
# (undefined symbol). So the wheel is kept in a folder named after the exact torch and Python,
# and a wheel goes there only once its ops have been loaded against this torch: first the one
# pip hands out (its cache, or a build), else one built with --no-cache-dir.
TORCH_FULL=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')
PYTAG=$("$VENV/bin/python" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEELS="${MMCONDATTN_WHEELS:-$HOME/.cache/mmcondattn/wheels}/mmcv-2.1.0_torch-${TORCH_FULL}_${PYTAG}"
ops_load() {  # do the compiled ops of the mmcv wheel in folder $1 load against this torch?
  "$VENV/bin/python" - "$1" <<'PY'
import glob, importlib.machinery, importlib.util, sys, tempfile, zipfile
import torch  # noqa: F401  the extension links against the loaded libtorch
wheel = (glob.glob(sys.argv[1] + '/mmcv-2.1.0-*.whl') or sys.exit('no mmcv wheel'))[0]
with zipfile.ZipFile(wheel) as z, tempfile.TemporaryDirectory() as tmp:
    ext = [n for n in z.namelist() if n.startswith('mmcv/_ext') and n.endswith('.so')]
    if not ext:
        sys.exit(f'{wheel} has no compiled ops')
    path = z.extract(ext[0], tmp)
    spec = importlib.util.spec_from_file_location(
        '_ext', path, loader=importlib.machinery.ExtensionFileLoader('_ext', path))
    try:
        importlib.util.module_from_spec(spec)
    except ImportError as e:
        sys.exit(f'{wheel}: {e}')
PY
}
build_mmcv() {  # build_mmcv OUT_DIR [pip options]: the mmcv 2.1.0 wheel with its ops
  local out=$1; shift
  rm -rf "$out"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel -q "$@" \
    --no-build-isolation --no-deps -w "$out" mmcv==2.1.0
}
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  if ! ls "$WHEELS"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "mmcv 2.1.0 with its compiled ops for torch $TORCH_FULL (a source build takes 16-50 min on 2 cores; kept in $WHEELS)"
    build_mmcv "$WHEELS.partial"
    if ! ops_load "$WHEELS.partial"; then
      log "that wheel (pip's cache) was built for another torch; building against torch $TORCH_FULL with --no-cache-dir"
      build_mmcv "$WHEELS.partial" --no-cache-dir
      ops_load "$WHEELS.partial"
    fi
    rm -rf "$WHEELS" && mv "$WHEELS.partial" "$WHEELS"
  else
    log "mmcv 2.1.0 built against torch $TORCH_FULL: $WHEELS"
  fi
  "${IPIP[@]}" -q --no-deps --force-reinstall "$WHEELS"/mmcv-2.1.0-*.whl
fi

log "mmengine, mmdet, mmpretrain, pycocotools, test and lint tools (requirements/)"
"${IPIP[@]}" -q -c "$CONS" -r requirements/mminstall.txt -r requirements/optional.txt \
  -r requirements/tests.txt
log "mmcondattn (editable)"
"${IPIP[@]}" -q -c "$CONS" --no-build-isolation --no-deps -e .

"$VENV/bin/python" - "$TORCH" <<'PY'
import sys
import torch, torchvision, mmcv, mmengine, mmdet, mmpretrain, numpy
from mmcv.ops import nms, RoIAlign  # noqa: F401  compiled ops
import mmpretrain.models  # noqa: F401  needs a working torchvision
assert torch.__version__.startswith(sys.argv[1]), torch.__version__
print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, '
      f'numpy {numpy.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmpretrain {mmpretrain.__version__}')
PY
echo "$WANT" > "$STAMP"
