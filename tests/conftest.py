"""Shared fixtures: the repository root, generated datasets, and running the tools."""
import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CONFIG = osp.join(REPO, 'configs/demo/mask-rcnn_r18_fpn_shapes.py')


def run_tool(args, cwd, timeout=600, env=None):
    """Run ``args`` (a tools/ script and its arguments) with this interpreter in ``cwd``."""
    script = args[0]
    cmd = ([sys.executable, osp.join(REPO, script)]
           if script.endswith('.py') else ['bash', osp.join(REPO, script)]) + list(args[1:])
    full_env = {**os.environ, 'PYTHONPATH': REPO, **(env or {})}
    full_env.pop('VIRTUAL_ENV', None)
    if not script.endswith('.py'):
        full_env['VIRTUAL_ENV'] = osp.dirname(osp.dirname(sys.executable))
        full_env['PYTHON'] = sys.executable
    return subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='session')
def coco_workspace(tmp_path_factory):
    """A folder holding ``data/shapes_coco`` (8 train / 4 val images of 96 px): the cwd the
    demo config's relative ``data_root`` expects."""
    from mmcondattn.datasets import make_coco_shapes
    ws = tmp_path_factory.mktemp('ws')
    make_coco_shapes(str(ws / 'data/shapes_coco'), num_train=8, num_val=4, img_size=96, seed=1)
    return ws
