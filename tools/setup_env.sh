#!/usr/bin/env bash
# Creates .venv at the repository root and installs the pinned OpenMMLab stack into it.
# Idempotent: a second run on the same machine only checks the stamp and returns in seconds.
# Why each step looks the way it does: see docs/installation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
STAMP="$VENV/.mmcondattn-stack"
# What the stamp certifies: the content of this script and of setup.py.
WANT=$(cat tools/setup_env.sh setup.py 2>/dev/null | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

log() { printf '[setup] %s\n' "$*"; }
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip)
# --isolated: ignore the machine's local wheel folder, whose CPU-only torch has no matching torchvision.
IPIP=("${PIP[@]}" --isolated --disable-pip-version-check install)

log "torch 2.13.0 + torchvision 0.28.0 (registry builds; they run on CPU)"
"${IPIP[@]}" -q torch==2.13.0 torchvision==0.28.0

log "build tools for mmcv (setuptools with pkg_resources)"
"${IPIP[@]}" -q "setuptools>=77.0.3,<81" wheel ninja "numpy<2.5" "packaging" "pyyaml" "addict" "yapf" "opencv-python" "pillow"

# Pin torch so no later requirement replaces it.
CONS="$VENV/constraints.txt"
printf 'torch==2.13.0\ntorchvision==0.28.0\n' > "$CONS"

if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  log "mmcv 2.1.0 from source with its compiled ops (about 16 min on 2 cores the first time; cached after)"
  MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${IPIP[@]}" -q --no-build-isolation -c "$CONS" mmcv==2.1.0
fi

log "mmengine, mmdet, mmpretrain, pycocotools, test tools"
"${IPIP[@]}" -q -c "$CONS" mmengine==0.10.7 mmdet==3.3.0 mmpretrain==1.2.0 pycocotools \
  pytest pytest-timeout hypothesis timm matplotlib tensorboard
log "mmcondattn (editable)"
"${IPIP[@]}" -q -c "$CONS" --no-build-isolation --no-deps -e .

"$VENV/bin/python" - <<'PY'
import torch, torchvision, mmcv, mmengine, mmdet, mmpretrain
from mmcv.ops import nms, RoIAlign  # noqa: F401  compiled ops
import mmpretrain.models  # noqa: F401  needs a working torchvision
assert torch.__version__.startswith('2.13.0'), torch.__version__
print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}, '
      f'mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, '
      f'mmpretrain {mmpretrain.__version__}')
PY
echo "$WANT" > "$STAMP"
