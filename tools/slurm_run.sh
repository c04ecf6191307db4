#!/usr/bin/env bash
# The srun launcher behind tools/slurm_train.sh and tools/slurm_test.sh (mmdet's conventions):
#   [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#   tools/slurm_run.sh train|test PARTITION JOB_NAME CONFIG WORK_DIR|CHECKPOINT [tool args...]
# One srun task per GPU, tools/train.py or tools/test.py with --launcher slurm.
set -euo pipefail
MODE=${1:-}
case "$MODE" in
  train) LAST=WORK_DIR ;;
  test) LAST=CHECKPOINT ;;
  *) echo "usage: $0 train|test PARTITION JOB_NAME CONFIG WORK_DIR|CHECKPOINT [args...]" >&2; exit 2 ;;
esac
shift
if [ $# -lt 4 ]; then
  echo "usage: tools/slurm_$MODE.sh PARTITION JOB_NAME CONFIG $LAST [$MODE.py args...]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
if [ "$MODE" = train ]; then TARGET=("--work-dir=$4"); else TARGET=("$4"); fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python}
[ -x "$ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ] && PYTHON="$ROOT/.venv/bin/python"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    "$PYTHON" -u "$ROOT/tools/$MODE.py" "$CONFIG" "${TARGET[@]}" --launcher=slurm "${@:5}"
