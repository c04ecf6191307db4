"""The user's commands end to end on the generated dataset: train, evaluate, resume, 2-process
CPU training, and one-line errors that leave existing work untouched."""
import os.path as osp

import pytest
from conftest import DEMO_CONFIG, run_tool

from mmcondattn.analysis.logs import scalars_records

pytestmark = pytest.mark.e2e  # the whole file (see pytest.ini)

# 8 train images, batch 2: 4 iterations an epoch.
SHORT = [
    '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1'
]


def _ckpt_meta(path):
    from mmcondattn.compat import load_checkpoint_file  # weights_only, mmengine's allow-list
    return load_checkpoint_file(path, map_location='cpu')['meta']


@pytest.fixture(scope='module')
def trained(coco_workspace):
    """One epoch of the stock Mask R-CNN demo config, evaluated by CocoMetric."""
    wd = str(coco_workspace / 'work_dirs/e2e')
    r = run_tool(['tools/train.py', DEMO_CONFIG, '--work-dir', wd] + SHORT, cwd=coco_workspace)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_train_writes_checkpoint_and_coco_metrics(trained):
    assert osp.isfile(osp.join(trained, 'epoch_1.pth'))
    metrics = [r for r in scalars_records(trained) if 'coco/bbox_mAP' in r]
    assert metrics and 'coco/segm_mAP' in metrics[-1]
    assert 0.0 <= metrics[-1]['coco/bbox_mAP'] <= 1.0
    losses = [r['loss'] for r in scalars_records(trained) if 'loss' in r]
    assert len(losses) == 4 and all(map(lambda v: v == v, losses))  # finite, one per iteration


def test_fresh_run_refuses_a_work_dir_with_checkpoints(trained, coco_workspace):
    ckpt = osp.join(trained, 'epoch_1.pth')
    before = (osp.getmtime(ckpt), osp.getsize(ckpt))
    r = run_tool(['tools/train.py', DEMO_CONFIG, '--work-dir', trained] + SHORT, cwd=coco_workspace)
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and 'already holds checkpoints' in r.stderr
    assert (osp.getmtime(ckpt), osp.getsize(ckpt)) == before


def test_resume_continues_from_the_saved_iteration(trained, coco_workspace):
    opts = [o.replace('max_epochs=1', 'max_epochs=2') for o in SHORT]
    r = run_tool(
        ['tools/train.py', DEMO_CONFIG, '--work-dir', trained, '--resume'] + opts,
        cwd=coco_workspace)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 4' in r.stdout + r.stderr
    assert _ckpt_meta(osp.join(trained, 'epoch_2.pth'))['iter'] == 8


def test_test_tool_evaluates_a_checkpoint(trained, coco_workspace):
    r = run_tool([
        'tools/test.py', DEMO_CONFIG,
        osp.join(trained, 'epoch_1.pth'), '--work-dir',
        str(coco_workspace / 'work_dirs/test')
    ],
                 cwd=coco_workspace)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out


def test_two_process_cpu_dist_train(coco_workspace):
    wd = str(coco_workspace / 'work_dirs/dist')
    r = run_tool(
        ['tools/dist_train.sh', DEMO_CONFIG, '2', '--work-dir', wd] + SHORT,
        cwd=coco_workspace,
        env={'PORT': '29512'})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert osp.isfile(osp.join(wd, 'epoch_1.pth'))
    assert 'process group: gloo' in r.stdout + r.stderr
    # 2 processes x batch 2 over 8 images: 2 iterations in the epoch.
    assert _ckpt_meta(osp.join(wd, 'epoch_1.pth'))['iter'] == 2


@pytest.mark.parametrize('case', ['config', 'dataset', 'checkpoint', 'corrupt'])
def test_bad_inputs_give_one_line(case, tmp_path, coco_workspace):
    if case == 'config':
        args, cwd, expect = ['tools/train.py',
                             str(tmp_path / 'nope.py')], tmp_path, 'config file not found'
    elif case == 'dataset':  # tmp_path has no data/ folder
        args, cwd, expect = ['tools/train.py', DEMO_CONFIG], tmp_path, 'dataset ann_file not found'
    elif case == 'checkpoint':
        args, cwd, expect = ['tools/test.py', DEMO_CONFIG, 'missing.pth'], coco_workspace, \
            'checkpoint not found'
    else:
        (tmp_path / 'bad.pth').write_text('garbage')
        args, cwd, expect = ['tools/test.py', DEMO_CONFIG, str(tmp_path / 'bad.pth')], \
            coco_workspace, 'not a valid torch checkpoint'
    r = run_tool(args, cwd=cwd)
    assert r.returncode == 2
    assert r.stderr.strip().startswith('error: ') and r.stderr.strip().count('\n') == 0, r.stderr
    assert expect in r.stderr
