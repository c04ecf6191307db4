"""The pinned stack: compiled mmcv ops, torchvision ops, and the mm* packages import and run."""
import torch


def test_mmcv_compiled_ops_run():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).view(1, 1, 4, 4)
    out = RoIAlign((2, 2), spatial_scale=1., sampling_ratio=1)(feat, torch.tensor([[0, 0, 0, 4,
                                                                                    4.]]))
    assert out.shape == (1, 1, 2, 2) and torch.isfinite(out).all()


def test_torchvision_ops_and_mm_packages_import():
    import mmdet
    import mmengine
    import mmpretrain
    import mmpretrain.models  # noqa: F401  needs a working torchvision
    import torchvision
    keep = torchvision.ops.nms(
        torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.]]), torch.tensor([1., .5]), 0.5)
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
        check_stack(
            **{
                'torch_version': '2.13.0',
                'torchvision_version': '0.28.0',
                'mmcv_version': '2.1.0',
                'has_mmcv_ops': True,
                **versions
            })
    check_stack(
        torch_version='2.13.0+cpu',
        torchvision_version='0.28.0+cpu',
        mmcv_version='2.0.0rc4',
        has_mmcv_ops=True)  # the edges that are fine


@pytest.mark.e2e
def test_mmcv_without_ops_fails_at_import_in_one_line(tmp_path):
    """Without the check, mmcv-lite fails deep inside mmcv.ops (when a head first runs NMS);
    with it, importing mmcondattn's OpenMMLab part (and so every tool) says what is wrong in
    one line."""
    (tmp_path / 'sitecustomize.py').write_text(HIDE_MMCV_EXT)
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}')

    def run(*args):
        return subprocess.run([sys.executable, *args],
                              env=env,
                              capture_output=True,
                              text=True,
                              cwd=tmp_path,
                              timeout=300)

    deep = run('-c', 'from mmcv.ops import nms')
    assert "No module named 'mmcv._ext'" in deep.stderr
    assert deep.stderr.count('File "') >= 3  # the stack's own traceback
    clear = run('-c', 'import mmcondattn.openmmlab')
    assert 'StackError: mmcv 2.1.0 has no compiled ops' in clear.stderr
    assert run('-c', 'import mmcondattn').returncode == 0  # the math needs torch alone
    tool = run(os.path.join(REPO, 'tools/train.py'), 'any_config.py')
    assert tool.returncode == 1
    assert tool.stderr.strip().splitlines() == [tool.stderr.strip().splitlines()[-1]
                                                ] and 'has no compiled ops' in tool.stderr


# a sitecustomize that makes mmcv._ext fail to load as an mmcv built for another torch does,
# and a dist-info (first on sys.path) recording that the wheel was built for torch 2.13.0
BREAK_MMCV_ABI = '''
import importlib.abc, importlib.machinery, sys
class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        raise ImportError(spec.origin + ': undefined symbol: '
                          '_ZN2at4_ops10zeros_like4callERKNS_6TensorE')
    def exec_module(self, module):
        pass
class _BrokenExt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'mmcv._ext':
            return importlib.machinery.ModuleSpec(name, _Loader(), origin='/site/mmcv/_ext.so')
sys.meta_path.insert(0, _BrokenExt())
'''


def _fake_mmcv_dist_info(root, torch_version):
    info = root / 'mmcv-2.1.0.dist-info'
    info.mkdir()
    (info / 'METADATA').write_text('Metadata-Version: 2.1\nName: mmcv\nVersion: 2.1.0\n')
    url = f'file:///cache/wheels/mmcv-2.1.0_torch-{torch_version}_cp311/mmcv-2.1.0-cp311.whl'
    (info / 'direct_url.json').write_text(f'{{"url": "{url}", "archive_info": {{}}}}')


def test_mmcv_built_for_another_torch_is_named():
    """An undefined libtorch symbol names the torch mmcv was built for and the rebuild."""
    ok = dict(
        torch_version='2.1.2',
        torchvision_version='0.16.2',
        mmcv_version='2.1.0',
        has_mmcv_ops=True)
    err = '/x/mmcv/_ext.so: undefined symbol: _ZN2at4_ops10zeros_like4callE'
    with pytest.raises(
            StackError,
            match=r"mmcv 2\.1\.0's compiled ops were built against torch "
            r"2\.13\.0, not the installed torch 2\.1\.2.*--no-cache-dir"):
        check_stack(**ok, mmcv_ext_error=err, mmcv_torch='2.13.0')
    with pytest.raises(StackError, match='another torch \\(which one is not recorded\\)'):
        check_stack(**ok, mmcv_ext_error=err, mmcv_torch='')
    with pytest.raises(StackError, match='compiled ops that cannot be loaded'):
        check_stack(**ok, mmcv_ext_error='libcudart.so.12: cannot open shared object file')
    check_stack(**ok, mmcv_ext_error='')


@pytest.mark.e2e
def test_mmcv_abi_mismatch_fails_at_import_in_one_line(tmp_path):
    (tmp_path / 'sitecustomize.py').write_text(BREAK_MMCV_ABI)
    _fake_mmcv_dist_info(tmp_path, '2.13.0')
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}{os.pathsep}{REPO}')
    tool = subprocess.run(
        [sys.executable, os.path.join(REPO, 'tools/train.py'), 'any.py'],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300)
    lines = tool.stderr.strip().splitlines()
    assert tool.returncode == 1 and len(lines) == 1, tool.stderr
    from importlib.metadata import version
    assert ('compiled ops were built against torch 2.13.0, not the installed torch '
            f'{version("torch")}:') in lines[0]
    assert 'MMCV_WITH_OPS=1 pip install --no-cache-dir --no-build-isolation mmcv==2.1.0' in lines[0]
