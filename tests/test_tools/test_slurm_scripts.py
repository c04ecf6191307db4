"""tools/slurm_train.sh and tools/slurm_test.sh build mmdet's srun command lines (no Slurm
cluster here: a stand-in `srun` on PATH records the command it is given)."""
import os
import stat

import pytest
from conftest import REPO, run_tool

FAKE_SRUN = '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$SRUN_LOG"\n'


@pytest.fixture
def srun_log(tmp_path, monkeypatch):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN)
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
    log = tmp_path / 'srun_args.txt'
    monkeypatch.setenv('SRUN_LOG', str(log))
    return log


@pytest.mark.parametrize('script,tool,fourth', [
    ('tools/slurm_train.sh', 'tools/train.py', '--work-dir=work_dirs/x'),
    ('tools/slurm_test.sh', 'tools/test.py', 'epoch_36.pth'),
])
def test_srun_command_line(srun_log, tmp_path, script, tool, fourth):
    last = 'work_dirs/x' if 'train' in script else 'epoch_36.pth'
    r = run_tool([script, 'gpu', 'xcit', 'configs/mask_rcnn_xcit_precond.py', last, '--amp'],
                 cwd=tmp_path,
                 env={
                     'GPUS': '16',
                     'GPUS_PER_NODE': '8'
                 })
    assert r.returncode == 0, r.stderr
    args = srun_log.read_text().splitlines()
    assert args[:2] == ['-p', 'gpu']
    for a in ('--job-name=xcit', '--gres=gpu:8', '--ntasks=16', '--ntasks-per-node=8',
              '--kill-on-bad-exit=1', '-u', f'{REPO}/{tool}', 'configs/mask_rcnn_xcit_precond.py',
              fourth, '--launcher=slurm'):
        assert a in args, (a, args)
    assert args[-1] == '--amp'  # extra arguments reach the tool


def test_missing_arguments_are_one_line(tmp_path):
    r = run_tool(['tools/slurm_train.sh', 'gpu', 'job'], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(
        "usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR")
    assert r.stderr.count("\n") == 1
