"""The classification path end to end (`make demo-cls` at a small scale): the quick-start
classifier (a preconditioned XCiT on the generated ImageNet-style folders) trained with 2 CPU
processes by tools/dist_train.sh, then evaluated (top-1) by tools/dist_test.sh, through
mmpretrain's stock dataset, head and metric."""
import os.path as osp

import pytest
from conftest import REPO, run_tool

from mmcondattn.analysis.logs import scalars_records

pytestmark = pytest.mark.e2e  # the whole file (see pytest.ini)

CLS_CONFIG = osp.join(REPO, 'configs/demo/xcit-n-p8_precond_shapes-cls.py')
SHORT = [
    '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
    'default_hooks.checkpoint.interval=1', 'default_hooks.logger.interval=1',
    'train_dataloader.batch_size=4', 'val_dataloader.batch_size=4', 'test_dataloader.batch_size=4'
]


@pytest.fixture(scope='module')
def imagenet_workspace(tmp_path_factory):
    """A folder holding ``data/shapes_imagenet32`` (4 train / 2 val images per class, 32 px)."""
    from mmcondattn.datasets import make_imagenet_folder
    ws = tmp_path_factory.mktemp('cls_ws')
    make_imagenet_folder(
        str(ws / 'data/shapes_imagenet32'), 4, 2, img_size=32, seed=3, size_range=(0.4, 0.8))
    return ws


def test_classifier_dist_train_then_dist_test(imagenet_workspace):
    ws = imagenet_workspace
    wd = str(ws / 'work_dirs/cls')
    r = run_tool(
        ['tools/dist_train.sh', CLS_CONFIG, '2', '--work-dir', wd] + SHORT,
        cwd=ws,
        env={'PORT': '29541'})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'CPU distributed run: process group: gloo' in out
    ckpt = osp.join(wd, 'epoch_1.pth')
    assert osp.isfile(ckpt)
    val = [r for r in scalars_records(wd) if 'accuracy/top1' in r]
    assert val and 0. <= val[-1]['accuracy/top1'] <= 100.

    r = run_tool(
        ['tools/dist_test.sh', CLS_CONFIG, ckpt, '2', '--work-dir',
         str(ws / 'work_dirs/cls_test')],
        cwd=ws,
        env={'PORT': '29542'})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'accuracy/top1' in out
