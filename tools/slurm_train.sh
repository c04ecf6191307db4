#!/usr/bin/env bash
# Usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args...]
# As mmdet's: one srun task per GPU, tools/train.py with --launcher slurm (tools/slurm_run.sh).
exec bash "$(dirname "$0")/slurm_run.sh" train "$@"
