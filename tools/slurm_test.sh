#!/usr/bin/env bash
# Usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# As mmdet's: one srun task per GPU, tools/test.py with --launcher slurm (tools/slurm_run.sh).
exec bash "$(dirname "$0")/slurm_run.sh" test "$@"
