"""The layers of the package: the math and the converters import with torch alone; the
OpenMMLab part comes with configs' ``custom_imports`` (each check in a fresh interpreter)."""
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


@pytest.mark.e2e
def test_plain_import_changes_nothing_in_mmengine():
    run('''
import sys
import mmcondattn
assert 'mmengine' not in sys.modules and 'mmcondattn.openmmlab' not in sys.modules
''')


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
