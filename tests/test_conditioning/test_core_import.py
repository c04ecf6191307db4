"""The layers of the package: the math, the converters and the κ measurement import with
torch alone; the OpenMMLab part is registered by ``import mmcondattn`` whenever the stack is
installed, in any import order (each check in a fresh interpreter)."""
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
from cond_helpers import BLOCK_MM
from conftest import REPO


def run(code: str, cwd: str = REPO) -> str:
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          cwd=cwd,
                          capture_output=True,
                          text=True,
                          timeout=300,
                          env={
                              'PYTHONPATH': REPO,
                              'OMP_NUM_THREADS': '1',
                              'PATH': '/usr/bin:/bin'
                          })
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.e2e
def test_math_converters_and_condition_model_need_torch_alone(tmp_path):
    out = run(
        BLOCK_MM + '''
import torch
import mmcondattn
from mmcondattn import __version__, condition_model, fold_conditioning
from mmcondattn.conditioning import SpectralLinear, condition_tokens, parse_conditioning
from mmcondattn.converters import classifier_to_detector, convert_swin, convert_vit, convert_xcit
import mmcondattn.converters.cli

from mmcondattn.converters import load_state_dict, save_state_dict
save_state_dict({'w': torch.ones(2)}, 'sd.pth')
assert torch.equal(load_state_dict('sd.pth')['w'], torch.ones(2))  # files too
sl = SpectralLinear(8, 24, spectral=dict(mode='svd'))
assert sl(torch.randn(2, 8)).shape == (2, 24)
assert condition_tokens(torch.randn(2, 5, 8)).shape == (2, 5, 8)
import timm  # timm's models through the same entry point, still without mm*
m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, depth=2)
condition_model(m, dict(precond=dict(), spectral=dict(), tokens=dict()))
assert isinstance(m.blocks[0].attn.qkv, SpectralLinear) and hasattr(m, 'token_conditioning')
m(torch.randn(1, 3, 32, 32))
assert fold_conditioning(m) is m
mm = sorted(k for k in sys.modules if k.split('.')[0] in BLOCKED)
assert mm == [] and 'mmcondattn.openmmlab' not in sys.modules, mm
try:
    import mmcondattn.openmmlab
except ImportError as e:
    print('openmmlab:', e)
''',
        cwd=str(tmp_path))
    assert out.startswith('openmmlab: mmcv')  # the stack check's one clear error


# A tiny detection XCiT: 4 XCA blocks feed the 4 pyramid levels.
BUILD_DET_XCIT = """
import torch
from mmdet.registry import MODELS
model = MODELS.build(dict(type='ConditionedXCiT', patch_size=8, out_indices=(0, 1, 2, 3),
                          arch=dict(embed_dims=16, depth=4, num_heads=2),
                          conditioning=dict(precond=dict())))
assert type(model).__name__ == 'ConditionedXCiTDet', type(model)
feats = model.eval()(torch.randn(1, 3, 32, 32))
assert [f.shape[-1] for f in feats] == [8, 4, 2, 1], [f.shape for f in feats]
"""


@pytest.mark.e2e
@pytest.mark.parametrize('first', ['mmcondattn', 'mmdet'])
def test_import_mmcondattn_registers_in_either_order(first):
    """``import mmcondattn`` before or after mmdet: the mmdet registry builds the conditioned
    XCiT, with no ``custom_imports`` and no ``import mmcondattn.openmmlab``. (This replaces
    the former check that a plain import left mmengine alone: registration used to depend on
    mmengine being imported first, so a script that imported mmcondattn first got a KeyError
    from the registry. Now a plain import registers wherever the stack is installed, and
    stays torch-only where it is not: test_math_converters_and_condition_model_need_torch_alone.)
    """
    imports = ('import mmcondattn\nimport mmdet.registry\n'
               if first == 'mmcondattn' else 'import mmdet.registry\nimport mmcondattn\n')
    out = run(imports + BUILD_DET_XCIT + """
import sys
from mmengine.registry import HOOKS
from mmpretrain.registry import MODELS as CLS
assert 'mmcondattn.openmmlab' in sys.modules
assert CLS.get('ConditionedTIMMBackbone') and HOOKS.get('ConditionMonitorHook')
print('built')
""")
    assert out.strip() == 'built'


# a sitecustomize body that makes mmcv look like mmcv-lite (its compiled ops cannot be found)
HIDE_MMCV_EXT = """
import sys
class _HideExt:
    def find_spec(self, name, path=None, target=None):
        if name == 'mmcv._ext':
            raise ModuleNotFoundError("No module named 'mmcv._ext'", name=name)
sys.meta_path.insert(0, _HideExt())
"""


@pytest.mark.e2e
def test_broken_stack_warns_on_a_plain_import_and_raises_where_mmengine_is_in_use():
    """mmengine installed but the stack broken (mmcv without its ops): a plain ``import
    mmcondattn`` warns in one line and keeps the torch-only part working; where mmengine is
    already imported (a config's ``custom_imports``, the tools), the StackError is raised."""
    out = run(HIDE_MMCV_EXT + """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    import mmcondattn
import torch
from mmcondattn.conditioning import SpectralLinear
assert SpectralLinear(8, 24)(torch.randn(2, 8)).shape == (2, 24)
assert 'mmcondattn.openmmlab' not in sys.modules
msgs = [str(w.message) for w in caught if 'mmcondattn' in str(w.message)]
assert len(msgs) == 1 and '\\n' not in msgs[0], msgs
print(msgs[0])
try:
    import mmcondattn.openmmlab
except ImportError as e:
    print(f'openmmlab: {type(e).__name__}: {e}')
""")
    warning, raised = out.strip().splitlines()
    assert 'the OpenMMLab stack is installed but does not import' in warning
    assert '(StackError: mmcv ' in warning and 'has no compiled ops' in warning
    assert raised.startswith('openmmlab: StackError: mmcv ') and 'has no compiled ops' in raised
    out = run(HIDE_MMCV_EXT + """
import mmengine
try:
    import mmcondattn
except ImportError as e:
    print(f'{type(e).__name__}: {e}')
""")
    assert out.startswith('StackError: mmcv ') and 'has no compiled ops' in out, out


@pytest.mark.e2e
def test_kappa_is_measured_on_a_timm_model_with_torch_alone():
    """mmcondattn.measure (and so κ of a timm model) needs torch and timm, no mm*; the
    OpenMMLab names of it stay importable where the stack is installed (models.probe)."""
    out = run(BLOCK_MM + """
import timm
import torch
from mmcondattn import condition_model
from mmcondattn.measure import attention_layers, measure_conditioning, summarize
torch.manual_seed(0)
m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, patch_size=8,
                      depth=2)
x = 1. + 1e-2 * torch.randn(2, 3, 32, 32)  # nearly flat images: ill-conditioned tokens
stock = measure_conditioning(m, x)
condition_model(m, dict(spectral=dict(mode='svd'), tokens=dict()))
cond = measure_conditioning(m, x)
assert len(stock['layers']) == len(cond['layers']) == len(attention_layers(m)) == 2
assert all(r['kappa_wq'] <= 2 + 1e-4 < s['kappa_wq'] for r, s in zip(cond['layers'],
                                                                       stock['layers']))
assert cond['tokens']['kappa'] <= 2 + 1e-3 < stock['tokens']['kappa']
assert summarize(cond)['kappa_attn_mean'] >= 1
mm = sorted(k for k in sys.modules if k.split('.')[0] in BLOCKED)
assert mm == [] and 'mmcondattn.openmmlab' not in sys.modules, mm
print('kappa', round(summarize(stock)['kappa_x_mean'], 3))
""")
    assert out.startswith('kappa ')


@pytest.mark.e2e
def test_custom_imports_register_the_openmmlab_part(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['mmcondattn'], allow_failed_imports=False)\n")
    run(f'''
import sys
from mmengine.config import Config
Config.fromfile({str(cfg)!r})
assert 'mmcondattn.openmmlab' in sys.modules
from mmdet.registry import MODELS as DET
from mmengine.registry import HOOKS
from mmpretrain.registry import MODELS as CLS
assert DET.get('ConditionedXCiT') and CLS.get('ConditionedTIMMBackbone')
assert HOOKS.get('ConditionMonitorHook')
''',
        cwd=osp.dirname(str(cfg)))
