"""The GPU check: its CPU dry run end to end (every section, PASS for what ran, skips named),
its one-line refusals, and the parts of its logic that need no model (summary, report folder,
time budgets)."""
import os
import re
import sys
import time

import pytest
import torch
from cond_helpers import block_mm_dir
from conftest import run_tool

from mmcondattn.analysis.gpu_check import (REPORT_NAME, Part, _ratio_cells, cpu_fp16_autocast,
                                           render, report_dir, stream)

TOOL = 'tools/analysis_tools/gpu_check.sh'
SECTIONS = ('## Environment', '## Benchmark', '## AMP training steps', '## Fused SDPA with precond',
            '## dist_train', '## Summary')


def section(text, title):
    """The body of the report's section ``title`` (up to the next one)."""
    return text.split(title + '\n', 1)[1].split('\n## ', 1)[0]


def cells(line):
    """The cells of a markdown table row; [] for other lines and rules."""
    if not line.startswith('| ') or set(line) <= set('|-'):
        return []
    return [c.strip() for c in line.strip().strip('|').split('|')]


def summary(text):
    """check name -> (status, detail) from the report's summary table."""
    rows = [cells(r) for r in section(text, '## Summary').splitlines()]
    return {c[0]: (c[1], c[2]) for c in rows if c and c[0] != 'check'}


@pytest.mark.slow
def test_dry_run_writes_a_passing_report(tmp_path):
    out = tmp_path / 'report'
    r = run_tool([TOOL, '--dry-run', '--out', str(out)],
                 cwd=tmp_path,
                 timeout=600,
                 env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert '[5/5] dist_train' in r.stdout and 'PASS: wrote' in r.stdout  # progress lines
    report = out / REPORT_NAME
    text = report.read_text()
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    checks = summary(text)
    for name in ('mmcv ops', 'benchmark ran', 'benchmark ratios finite',
                 'AMP loss, grads and weights finite', 'dist_train ran'):
        assert checks[name][0] == 'PASS', (name, checks[name])
    assert checks['precond keeps the fused SDPA kernel'] == ('SKIP', 'skipped: no CUDA')
    fp16 = cpu_fp16_autocast()  # torch 2.13 has fp16 autocast and GradScaler on CPU
    assert ('AMP fp16' not in checks) == fp16
    assert not [n for n, (s, _) in checks.items() if s == 'FAIL']
    assert text.rstrip().splitlines()[-1].startswith('**PASS**')

    # benchmark: the repository tool's rows, one per family, detection form
    bench = section(text, '## Benchmark')
    assert 'benchmark_conditioning.py --device cpu --tiny' in bench
    assert [
        line.split('|')[1].strip() for line in bench.splitlines()
        if line.startswith('| ') and ' det | precond ' in line
    ] == ['vit', 'swin', 'xcit']
    # AMP: every family x method; bf16 (and fp16 where CPU autocast has it) finite
    amp = section(text, '## AMP training steps')
    rows = {
        tuple(c[:3]): c[3:6]
        for c in map(cells, amp.splitlines()) if c and c[2] in ('fp16', 'bf16')
    }
    from mmcondattn.analysis.gpu_check import METHODS  # the trainable presets
    assert 'spectral_per_head' in METHODS and 'spectral_svd_every_step' in METHODS
    assert sorted({k[:2]
                   for k in rows}) == sorted(
                       (f, m) for f in ('vit', 'swin', 'xcit') for m in METHODS)
    for (f, m, dtype), finite in rows.items():
        if dtype == 'fp16' and not fp16:
            assert finite[0] == 'skipped: no CUDA'
        else:
            assert finite == ['yes'] * 3, (f, m, dtype, finite)
    # SDPA: on CPU precond runs the same op as the stock layer (the fused CPU kernel where
    # torch has one: 2.2 on; torch 2.1's CPU SDPA is the math path for both)
    if hasattr(torch.ops.aten, '_scaled_dot_product_flash_attention_for_cpu'):
        assert '_scaled_dot_product_flash_attention_for_cpu' in text
        assert 'same fused ops as stock: yes' in text
    # dist_train: 2 iterations of the headline config with gloo, a finite last loss
    assert re.search(r'\| 0 \| 2 of 2 \| 2 \| \d+\.\d{4} \| gloo \|', text)
    for f in ('benchmark.md', 'benchmark.log', 'dist_train/train.log',
              'dist_train/mask_rcnn_xcit_precond_shapes.py',
              'dist_train/data/shapes_coco/annotations/instances_train.json'):
        assert (out / f).is_file(), f
    assert "_base_ = " in (out / 'dist_train/mask_rcnn_xcit_precond_shapes.py').read_text()
    assert list((out / 'dist_train/work_dir').rglob('scalars.json'))
    assert not list((out / 'dist_train/work_dir').rglob('*.pth'))


@pytest.mark.slow  # the tool's imports alone take about 10 s here
def test_an_existing_report_is_never_overwritten(tmp_path):
    report = tmp_path / 'used' / REPORT_NAME
    report.parent.mkdir()
    report.write_text('old report')
    before = report.stat().st_mtime_ns
    r = run_tool([TOOL, '--dry-run', '--out', str(report.parent)], cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count('\n') == 0 and 'never overwritten' in r.stderr, r.stderr
    assert report.read_text() == 'old report' and report.stat().st_mtime_ns == before
    assert os.listdir(report.parent) == [REPORT_NAME]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_without_cuda_the_full_check_says_so_in_one_line(tmp_path):
    r = run_tool([TOOL, '--out', str(tmp_path / 'r')], cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'no CUDA' in err and '--dry-run' in err, err
    assert not (tmp_path / 'r' / REPORT_NAME).exists()


def test_summary_fails_when_any_check_fails():
    ok, bad = Part('A'), Part('B')
    ok.check('a', True, 'fine')
    ok.check('s', None, 'skipped: no CUDA')
    bad.check('b', False, 'broke | here')
    checks = ok.checks + bad.checks
    text = render([ok, bad], checks, passed=False, total=1.0, dry_run=False)
    assert summary(text) == {
        'a': ('PASS', 'fine'),
        's': ('SKIP', 'skipped: no CUDA'),
        'b': ('FAIL', 'broke / here')
    }
    assert text.rstrip().endswith('(1 passed, 1 failed, 1 skipped)')
    assert '**FAIL**' in text


def test_report_folder_is_fresh(tmp_path, monkeypatch):
    from mmcondattn.engine.launch import UserError
    monkeypatch.chdir(tmp_path)
    first, second = report_dir(), report_dir()  # same second: a suffix, never the same folder
    assert first != second and os.path.isdir(first) and os.path.isdir(second)
    assert first.startswith(os.path.join('work_dirs', 'gpu_check', ''))
    (tmp_path / 'used').mkdir()
    (tmp_path / 'used' / REPORT_NAME).write_text('old')
    with pytest.raises(UserError, match='never overwritten'):
        report_dir(str(tmp_path / 'used'))
    assert (tmp_path / 'used' / REPORT_NAME).read_text() == 'old'


@pytest.mark.e2e
def test_stream_stops_a_command_at_its_budget(tmp_path):
    seen = []
    t0 = time.monotonic()
    rc, lines = stream(
        [sys.executable, '-c', 'import time; print("[1/2] row", flush=True); '
         'time.sleep(60)'],
        3,
        seen.append,
        str(tmp_path / 'log'),
        show=lambda s: s.startswith('['))
    assert rc is None and time.monotonic() - t0 < 30
    assert lines == ['[1/2] row'] and seen == ['    [1/2] row']
    assert (tmp_path / 'log').read_text() == '[1/2] row\n'


def test_ratio_cells_reads_every_ratio_column():
    text = ('| family | train ratio | peak MiB | peak ratio |\n|---|---|---|---|\n'
            '| vit | 1.010 | 3.0 | nan |\n\n| a | b ratio |\n|---|---|\n| x | 0.99 |\n')
    assert _ratio_cells(text) == ['1.010', 'nan', '0.99']


@pytest.mark.slow
def test_timm_dry_run_needs_torch_and_timm_alone(tmp_path):
    """``--models timm``: every part passes on CPU with mmengine / mmcv / mmdet / mmpretrain
    unimportable (in the tool and in the benchmark it starts), and dist_train is replaced by
    DDP steps over gloo."""
    pytest.importorskip('timm')
    from conftest import REPO
    out = tmp_path / 'report'
    pythonpath = f'{block_mm_dir(tmp_path)}:{REPO}'
    r = run_tool([TOOL, '--dry-run', '--models', 'timm', '--out',
                  str(out)],
                 cwd=tmp_path,
                 timeout=600,
                 env={
                     'OMP_NUM_THREADS': '1',
                     'PYTHONPATH': pythonpath
                 })
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    text = (out / REPORT_NAME).read_text()
    assert text.startswith('# GPU check: CPU dry run (tiny sizes) (timm models')
    titles = [t for t in SECTIONS if t != '## dist_train'] + ['## DDP training steps']
    assert all(t in text for t in titles) and '## dist_train' not in text
    checks = summary(text)
    assert checks['mmcv ops'][0] == 'SKIP'
    for name in ('benchmark ran', 'benchmark ratios finite', 'AMP loss, grads and weights finite',
                 'DDP steps finite'):
        assert checks[name][0] == 'PASS', (name, checks[name])
    assert not [n for n, (s, _) in checks.items() if s == 'FAIL']
    bench = section(text, '## Benchmark')
    assert '--models timm' in bench and '`xcit_small_12_p16_224`' in bench
    assert [c[0] for c in map(cells, bench.splitlines())
            if c[1:3] == ['det', 'precond']] == ['vit', 'swin', 'xcit']
    ddp = [c for c in map(cells, section(text, '## DDP training steps').splitlines()) if c]
    assert ddp[1][0] == 'gloo' and ddp[1][2:] == ['True', 'True']
    assert len(ddp[1][1].split(', ')) == 3  # one loss per step


def test_timm_twins_share_weights_and_condition_only_attention():
    """The timm twins of the benchmark: the same stock weights, the conditioned one with
    conditioned qkv / proj children; with precond the plain twin equals timm's own forward."""
    pytest.importorskip('timm')
    from mmcondattn.analysis.benchmark import build_timm, build_twins, patch_tokens
    from mmcondattn.conditioning import PreconditionedLinear, SpectralLinear
    for family in ('vit', 'swin', 'xcit'):
        plain, cond = build_twins(family, 'det', 'all', (64, 96), tiny=True, models='timm')
        torch.manual_seed(0)  # build_twins' seed
        ref = build_timm(family, (64, 96), tiny=True)
        psd, csd = plain.state_dict(), cond.state_dict()
        assert set(csd) - set(psd) and all(
            k.endswith(('qkv.correction', 'conditioning_state.record'))
            for k in set(csd) - set(psd))
        assert all(torch.equal(psd[k], csd[k]) for k in psd)
        assert any(isinstance(m, PreconditionedLinear) for m in cond.modules())
        assert any(isinstance(m, SpectralLinear) for m in cond.modules())
        x = torch.randn(2, 3, 64, 96)
        plain.eval(), ref.eval()
        with torch.no_grad():
            assert torch.equal(plain(x), ref.model.forward_features(x))
        tokens = patch_tokens(plain, x)
        assert tokens.dim() == 3 and tokens.shape[0] == 2


def test_timm_mode_refuses_layer_and_detector_rows():
    from mmcondattn.analysis.benchmark import BenchmarkSettings
    assert BenchmarkSettings(models='timm').layers is False
    assert BenchmarkSettings().layers is True
    for bad in (dict(layers=True), dict(detectors=[('a', 'b.py')])):
        with pytest.raises(ValueError, match='need the OpenMMLab models'):
            BenchmarkSettings(models='timm', **bad)
    with pytest.raises(ValueError, match="unknown models 'mmseg'; valid: openmmlab, timm"):
        BenchmarkSettings(models='mmseg')
