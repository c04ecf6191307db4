"""tools/analysis_tools/show_detections.py as a command: the trees XCiT RetinaNet with random
weights on a small tile and its COCO json (tmp_path) gives one PNG, ground truth left and
predictions right; a missing image is one line, exit status 2."""
import json
import os.path as osp

import numpy as np
import pytest
from conftest import REPO, run_tool
from PIL import Image

pytestmark = pytest.mark.e2e  # runs the tool as a command (see pytest.ini)

TOOL = 'tools/analysis_tools/show_detections.py'
CONFIG = osp.join(REPO, 'configs/trees/retinanet_xcit-tiny-p8_fpn_trees.py')
TILE = (96, 64)  # width, height: not square, so that the side-by-side width is checked


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A random-weights checkpoint of the config, a tile and the COCO json holding it."""
    import torch
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import mmcondattn.openmmlab  # noqa: F401  registers the conditioned backbones

    ws = tmp_path_factory.mktemp('show')
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(CONFIG).model)
    meta = {'dataset_meta': {'classes': ('tree', ), 'palette': [(0, 160, 0)]}}
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, ws / 'random.pth')

    w, h = TILE
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(ws / 'tile.png')
    coco = {
        'images': [{
            'id': 1,
            'file_name': 'tile.png',
            'width': w,
            'height': h
        }],
        'annotations': [{
            'id': i + 1,
            'image_id': 1,
            'category_id': 1,
            'bbox': box,
            'area': box[2] * box[3],
            'iscrowd': 0
        } for i, box in enumerate([[5, 5, 20, 20], [40, 20, 30, 25]])],
        'categories': [{
            'id': 1,
            'name': 'tree'
        }]
    }
    (ws / 'tile.json').write_text(json.dumps(coco))
    return ws


def test_gt_left_predictions_right(workspace):
    ws = workspace
    out = ws / 'vis/detections.png'
    r = run_tool([
        TOOL, CONFIG,
        str(ws / 'random.pth'), '--img',
        str(ws / 'tile.png'), '--ann-file',
        str(ws / 'tile.json'), '--out-file',
        str(out), '--score-thr', '0.3', '--device', 'cpu'
    ],
                 cwd=ws,
                 timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert '2 ground-truth boxes' in r.stdout, r.stdout
    with Image.open(out) as im:
        assert im.size == (2 * TILE[0], TILE[1])


def test_missing_image_is_one_line(workspace):
    ws = workspace
    r = run_tool([
        TOOL, CONFIG,
        str(ws / 'random.pth'), '--img',
        str(ws / 'nope.png'), '--out-file',
        str(ws / 'x.png')
    ],
                 cwd=ws,
                 timeout=60)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == f'error: image not found: {ws / "nope.png"}', r.stderr
    assert 'Traceback' not in r.stderr and not (ws / 'x.png').exists()
