"""The user's commands on the headline config: tools/dist_train.sh with 2 CPU processes on
configs/mask_rcnn_xcit_precond.py (pointed at the generated data by a toy override config),
tools/dist_test.sh on its checkpoint, and one-line errors for configs whose data is absent."""
import os.path as osp

import pytest
from conftest import DEMO_CONFIG, REPO, run_tool
from mmengine.config import Config

pytestmark = pytest.mark.e2e  # the whole file (see pytest.ini)

HEADLINE = osp.join(REPO, 'configs/mask_rcnn_xcit_precond.py')
DATA_KEYS = ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
             'test_evaluator', 'train_cfg', 'param_scheduler', 'default_hooks')


def _toy_override(config, out):
    """``config`` with the data and a short schedule of the shapes demo (3 classes, 96 px)."""
    cfg, demo = Config.fromfile(config), Config.fromfile(DEMO_CONFIG)
    for key in DATA_KEYS:
        cfg[key] = demo[key]
    cfg.train_cfg.update(max_epochs=1, val_interval=1)
    cfg.default_hooks.checkpoint.interval = 1
    cfg.model.roi_head.bbox_head.num_classes = cfg.model.roi_head.mask_head.num_classes = 3
    cfg.model.backbone.init_cfg = None  # no download here: the documented from-scratch override
    cfg.dump(str(out))
    return str(out)


def test_headline_config_dist_train_then_dist_test(coco_workspace, tmp_path):
    toy = _toy_override(HEADLINE, tmp_path / 'mask_rcnn_xcit_precond_shapes.py')
    wd = str(coco_workspace / 'work_dirs/headline')
    r = run_tool(['tools/dist_train.sh', toy, '2', '--work-dir', wd],
                 cwd=coco_workspace,
                 env={'PORT': '29531'})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'SyncBN -> BN' in out  # the config's SyncBN, converted for CPU processes
    assert osp.isfile(osp.join(wd, 'epoch_1.pth'))
    r = run_tool([
        'tools/dist_test.sh', toy,
        osp.join(wd, 'epoch_1.pth'), '2', '--work-dir',
        str(coco_workspace / 'work_dirs/headline_test')
    ],
                 cwd=coco_workspace,
                 env={'PORT': '29532'})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out


@pytest.mark.parametrize('config,expect', [
    ('mask_rcnn_xcit_precond.py', "data/coco/annotations/instances_train2017.json"),
    ('xcit/xcit-s12-p16_precond_8xb128_in1k.py', "data/imagenet/train"),
])
def test_config_without_its_dataset_says_where_data_is_expected(config, expect, tmp_path):
    r = run_tool(['tools/train.py', osp.join(REPO, 'configs', config)], cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count('\n') == 0 and expect in err and '--cfg-options' in err, err
    assert not (tmp_path / 'work_dirs').exists() or not list(
        (tmp_path / 'work_dirs').rglob('*.pth'))
