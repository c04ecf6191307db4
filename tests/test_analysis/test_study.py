"""The small-scale study (mmcondattn.analysis.study and its command line,
tools/analysis_tools/conditioning_study.py): real runs of the tiny study configs on generated
data, the report and plots it writes, its presets and its arithmetic."""
import json

import matplotlib.image as mpimg
import pytest
from cond_helpers import write_fashion_mnist_fixture
from conftest import run_tool

from mmcondattn.analysis.study import conditioning_of, summarize

pytestmark = pytest.mark.e2e  # the whole file (see pytest.ini)

TOOL = 'tools/analysis_tools/conditioning_study.py'


@pytest.mark.slow
def test_study_trains_reports_and_reuses_runs(tmp_path):
    args = [
        TOOL, '--out-dir',
        str(tmp_path / 'study'), '--tasks', 'cls', '--families', 'xcit', '--methods', 'baseline',
        'precond', '--seeds', '0', '1', '--cls-epochs', '2', '--scale-data', '0.25', '--docs',
        str(tmp_path / 'docs/study.md')
    ]
    r = run_tool(args, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    records = json.load(open(tmp_path / 'study/results.json'))
    assert {(x['method'], x['seed'])
            for x in records} == {('baseline', 0), ('baseline', 1), ('precond', 0), ('precond', 1)}
    for x in records:
        assert [e for e, _ in x['curve']] == [1, 2]
        assert all(0 <= v <= 100 for _, v in x['curve'])
        assert len(x['kappa']['layers']) == 4  # the tiny XCiT's 4 XCA layers
        assert all(v >= 1 for layer in x['kappa']['layers'] for k, v in layer.items()
                   if k.startswith('kappa'))
    report = (tmp_path / 'study/study.md').read_text()
    rows = [line for line in report.splitlines() if line.startswith('| cls |')]
    assert [row.split('|')[3].strip() for row in rows] == ['baseline', 'precond']
    for name in ('curves_cls_xcit.png', 'kappa_cls_xcit.png'):
        img = mpimg.imread(tmp_path / 'study' / name)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert (tmp_path / 'docs/study' / name).is_file()
    page = (tmp_path / 'docs/study.md').read_text()
    assert '](study/curves_cls_xcit.png)' in page and page.startswith('Command:')

    (tmp_path / 'docs/study.md').write_text(  # prose around the markers survives a rerun
        'Intro.\n<!-- study:begin -->\nold\n<!-- study:end -->\nConclusion.\n')
    r = run_tool(args, cwd=tmp_path)  # every run is found finished: reused, same numbers
    assert r.returncode == 0
    page = (tmp_path / 'docs/study.md').read_text()
    assert page.startswith('Intro.\n<!-- study:begin -->\nCommand:') and 'old' not in page
    assert page.endswith('<!-- study:end -->\nConclusion.\n')
    assert json.load(open(tmp_path / 'study/results.json')) == records


def test_summary_arithmetic():
    kappa = dict(layers=[dict(kappa_attn=4., kappa_out_proj=2., kappa_x=8.)], tokens=None)

    def rec(method, seed, curve):
        return dict(
            task='cls',
            family='vit',
            method=method,
            seed=seed,
            seconds=30.,
            curve=list(enumerate(curve, 1)),
            kappa=kappa)

    records = [
        rec('baseline', 0, [10, 50, 60]),
        rec('baseline', 1, [20, 40, 80]),
        rec('precond', 0, [30, 70, 90]),
        rec('precond', 1, [50, 70, 60]),
        rec('tokens', 0, [10, 20, 30]),
        rec('tokens', 1, [10, 20, 40])
    ]
    rows = {r['method']: r for r in summarize(records, ['baseline', 'precond', 'tokens'])}
    assert rows['baseline']['final'] == pytest.approx((70., 14.1421356))
    assert rows['baseline']['reach'] == 3
    assert rows['precond']['reach'] == 2  # mean curve 40, 70 >= 70: the baseline's final mean
    assert rows['tokens']['reach'] is None
    assert rows['precond']['kappa'] == dict(kappa_attn=4., kappa_out_proj=2., kappa_x=8.)
    assert rows['tokens']['minutes'] == pytest.approx(1.)


def test_unknown_method_is_one_line(tmp_path):
    r = run_tool([TOOL, '--methods', 'baseline', 'precnd'], cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: unknown method 'precnd'; valid: baseline, precond, "
                                'spectral, spectral_per_head, spectral_svd_every_step, tokens, '
                                'all, spectral_lam<λ> (e.g. spectral_lam0.5)')


def test_methods_are_the_presets_with_the_task_s_solver_and_lambda():
    """The shapes tasks condition tokens with the exact svd solver (flat shapes give repeated
    token rows), fmnist with the default one and spectral at the family's best λ; a
    ``spectral_lam<λ>`` name is spectral at that λ on every task; the presets stay as they
    were (each call gets a copy)."""
    assert conditioning_of('cls', 'baseline') == {}
    assert conditioning_of('cls', 'spectral') == dict(spectral=dict())
    assert conditioning_of('det', 'all') == dict(
        precond=dict(), spectral=dict(), tokens=dict(solver='svd'))
    assert conditioning_of('fmnist', 'tokens') == dict(tokens=dict())
    assert conditioning_of(
        'fmnist', 'all', lam=2.) == dict(
            precond=dict(), spectral=dict(lam=2.), tokens=dict())
    assert conditioning_of('cls', 'spectral_lam1') == dict(spectral=dict(lam=1.))


@pytest.mark.slow
def test_fmnist_sweep_best_lambda_seeds_report_and_claims(tmp_path):
    """The real-data task on a tiny Fashion-MNIST fixture: the λ sweep runs first (first
    seed), spectral's other seeds use the best λ, κ over training comes from the
    ConditionMonitorHook logs, the report and the claims go between their markers."""
    write_fashion_mnist_fixture(tmp_path / 'fm', dict(train=48, test=40, side=28), gz=False)
    page = tmp_path / 'docs/study.md'
    page.parent.mkdir()
    page.write_text('Top.\n<!-- study-fmnist:begin -->\n<!-- study-fmnist:end -->\nMiddle.\n'
                    '<!-- claims-fmnist:begin -->\n<!-- claims-fmnist:end -->\nEnd.\n')
    args = [
        TOOL, '--out-dir',
        str(tmp_path / 'study'), '--tasks', 'fmnist', '--families', 'vit', '--methods', 'baseline',
        'spectral', '--seeds', '0', '1', '--lams', '1', '5', '--fmnist-epochs', '2',
        '--fmnist-train', '32', '--fmnist-root',
        str(tmp_path / 'fm'), '--claims', '--docs',
        str(page)
    ]
    r = run_tool(args, cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    records = json.load(open(tmp_path / 'study/results.json'))
    sweep = {
        x['method']: x
        for x in records if x['method'].startswith('spectral_lam') and x['seed'] == 0
    }
    assert sorted(sweep) == ['spectral_lam1', 'spectral_lam5']
    finals = {m: x['curve'][-1][1] for m, x in sweep.items()}
    best = min(sweep, key=lambda m: (-finals[m], float(m[len('spectral_lam'):])))
    # spectral's second seed is a run of the best λ, in the sweep run's folder
    assert {(x['method'], x['seed'])
            for x in records} == {('baseline', 0), ('baseline', 1), ('spectral_lam1', 0),
                                  ('spectral_lam5', 0), (best, 1)}
    for x in records:
        assert x['num_train'] == 32 and x['iters_per_epoch'] == 1  # batch 32
        assert [e for e, _ in x['curve']] == [1, 2]
        kt = x['kappa_train']  # ConditionMonitorHook: before step 0 and after each epoch
        assert len(kt['kappa_attn']) == 4  # the tiny ViT's 4 layers
        assert [step for step, _ in kt['kappa_attn'][0]] == [0, 1, 2]
        assert all(v >= 1 for layer in kt['kappa_attn'] for _, v in layer)
        lam = x['conditioning'].get('spectral', {}).get('lam', 0.)
        # κ(W_Q) of the effective weight W + λI: the hook sees the correction
        if lam >= 5:
            assert kt['kappa_wq'][0][0][1] < 3
        assert (tmp_path / 'study' / x['checkpoint']).is_file()
    report = (tmp_path / 'study/study_fmnist.md').read_text()
    main = [ln for ln in report.splitlines() if ln.startswith('| vit |')]
    assert main[0].split('|')[2].strip() == 'baseline'
    assert main[1].split('|')[2].strip() == f'spectral λ*={best[len("spectral_lam"):]}'
    assert main[1].split('|')[3].strip() == '0, 1'
    assert any(ln.startswith('| vit | 5') for ln in main) and '(λ*)' in report
    for name in ('curves_fmnist_vit.png', 'kappa_train_fmnist_vit.png', 'kappa_fmnist_vit.png',
                 'sweep_fmnist.png', 'claim_spectral.png'):
        img = mpimg.imread(tmp_path / 'study' / name)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert (tmp_path / 'docs/study' / name).is_file()
    text = page.read_text()
    assert text.startswith('Top.\n<!-- study-fmnist:begin -->\nCommand:')
    assert '\nMiddle.\n<!-- claims-fmnist:begin -->\n**spectral**' in text
    assert text.endswith('<!-- claims-fmnist:end -->\nEnd.\n')
    claims = (tmp_path / 'study/claims_fmnist.md').read_text()
    lam = best[len('spectral_lam'):]
    assert 'tools/analysis_tools/conditioning.py' in claims
    assert f'| vit (λ*={lam}) | 0 | κ(W_Q) |' in claims
    assert '**tokens**' not in claims  # no tokens run: that claim is left out
