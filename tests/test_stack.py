"""The pinned stack: compiled mmcv ops, torchvision ops, and the mm* packages import and run."""
import torch


def test_mmcv_compiled_ops_run():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).view(1, 1, 4, 4)
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=1)(feat, torch.tensor([[0, 0, 0, 4, 4.]]))
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()


def test_torchvision_ops_and_mm_packages_import():
    import mmdet
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401  needs a working torchvision
    import torchvision
    keep = torchvision.ops.nms(torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]),
                               torch.tensor([1., .5]), 0.5)
    assert keep.tolist() == [0]
    assert (mmdet.__version__, mmpretrain.__version__, mmengine.__version__) == \
        ('3.3.0', '1.2.0', '0.10.7')


def test_package_imports_and_registers():
    import mmcondattn
    assert mmcondattn.__version__
    assert callable(mmcondattn.fold_conditioning)


# --- the stack check run at `import mmcondattn` (mmcondattn/stack.py) -----------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

from mmcondattn.stack import StackError, check_stack  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a sitecustomize that makes mmcv look like mmcv-lite: its compiled extension cannot be found
HIDE_MMCV_EXT = '''
import importlib.abc, sys
class _HideExt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'mmcv._ext':
            raise ModuleNotFoundError("No module named 'mmcv._ext'", name=name)
sys.meta_path.insert(0, _HideExt())
'''


def test_installed_stack_passes_the_check():
    check_stack()


@pytest.mark.parametrize('versions, says', [
    (dict(torchvision_version='0.27.0'), 'torchvision 0.27.0 does not match torch'),
    (dict(mmcv_version='2.2.0'), 'mmcv 2.2.0 is installed but mmdet 3.x accepts'),
    (dict(mmcv_version='1.7.2'), 'mmcv 1.7.2 is installed but mmdet 3.x accepts'),
    (dict(mmcv_version='2.0.0rc2'), 'mmcv 2.0.0rc2 is installed but mmdet 3.x accepts'),
    (dict(has_mmcv_ops=False), 'has no compiled ops'),
])
def test_broken_stack_is_named(versions, says):
    with pytest.raises(StackError, match=says):
        check_stack(**{'torch_version': '2.13.0', 'torchvision_version': '0.28.0',
                       'mmcv_version': '2.1.0', 'has_mmcv_ops': True, **versions})
    check_stack(torch_version='2.13.0+cpu', torchvision_version='0.28.0+cpu',
                mmcv_version='2.0.0rc4', has_mmcv_ops=True)  # the edges that are fine


def test_mmcv_without_ops_fails_at_import_in_one_line(tmp_path):
    """Without the check, mmcv-lite fails deep inside mmcv.ops (when a head first runs NMS);
    with it, importing mmcondattn (and so every tool) says what is wrong in one line."""
    (tmp_path / 'sitecustomize.py').write_text(HIDE_MMCV_EXT)
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}')

    def run(*args):
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    deep = run('-c', 'from mmcv.ops import nms')
    assert "No module named 'mmcv._ext'" in deep.stderr
    assert deep.stderr.count('File "') >= 3  # the stack's own traceback
    clear = run('-c', 'import mmcondattn')
    assert 'StackError: mmcv 2.1.0 has no compiled ops' in clear.stderr
    tool = run(os.path.join(REPO, 'tools/train.py'), 'any_config.py')
    assert tool.returncode == 1
    assert tool.stderr.strip().splitlines() == [
        tool.stderr.strip().splitlines()[-1]] and 'has no compiled ops' in tool.stderr
