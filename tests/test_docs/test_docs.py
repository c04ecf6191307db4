"""The docs tell the truth: every tool command in docs/*.md and README.md is run here or
exercised by a named test; every tools/ script and config path they mention exists; their
links resolve; the options table of docs/methods.md equals options.py; the Python snippets
marked ``<!-- doctest: NAME -->`` run and reproduce the numbers printed next to them."""
import ast
import dataclasses
import glob
import os
import os.path as osp
import re
import runpy
import shlex
import subprocess
import sys

import pytest
import torch
from cond_helpers import code_blocks, doctest_blocks
from conftest import REPO

DOCS = sorted(glob.glob(osp.join(REPO, 'docs', '*.md'))) + [osp.join(REPO, 'README.md')]
rel = lambda p: osp.relpath(p, REPO)  # noqa: E731
PREFIXES = ('python tools/', '.venv/bin/python tools/', 'tools/', 'make', 'bash tools/')
SHELL_LANGS = ('', 'bash', 'sh', 'shell', 'console')

# Commands too long to run here: the test that runs them (file::function).
EXERCISED_BY = {
    'tools/train.py':
    'tests/test_tools/test_train_e2e.py::test_train_writes_checkpoint_and_coco_metrics',
    'tools/test.py': 'tests/test_tools/test_train_e2e.py::test_test_tool_evaluates_a_checkpoint',
    'tools/dist_train.sh': 'tests/test_tools/test_train_e2e.py::test_two_process_cpu_dist_train',
    'tools/dist_test.sh':
    'tests/test_tools/test_user_commands.py::test_headline_config_dist_train_then_dist_test',
    'tools/analysis_tools/eval_model_zoo.py':
    'tests/test_analysis/test_model_zoo.py::test_eval_tool_reports_match_then_regression',
    'tools/model_converters/xcit2mmcondattn.py':
    'tests/test_converters/test_converters.py::test_command_lines',
    'tools/model_converters/vit2mmcondattn.py':
    'tests/test_converters/test_converters.py::test_command_lines',
    'tools/model_converters/swin2mmcondattn.py':
    'tests/test_converters/test_converters.py::test_command_lines',
    'tools/model_converters/cls2det.py':
    'tests/test_converters/test_converters.py::test_command_lines',
    'tools/slurm_train.sh': 'tests/test_tools/test_slurm_scripts.py::test_srun_command_line',
    'tools/slurm_test.sh': 'tests/test_tools/test_slurm_scripts.py::test_srun_command_line',
    'make demo':
    'tests/test_tools/test_train_e2e.py::test_train_writes_checkpoint_and_coco_metrics',
    'make demo-cls':
    'tests/test_tools/test_classification_e2e.py::test_classifier_dist_train_then_dist_test',
    'make test': 'the test suite itself (.ci/run runs it)',
}
# Commands run here verbatim (in a temporary folder): scripts whose doc commands are run by
# test_concrete_commands_run below.
RUN_HERE = ('tools/misc/generate_dataset.py', 'tools/model_converters/', 'make data')


# ------------------------------------------------------------------------------ parsing
def shell_commands(text):
    """Tool commands (see PREFIXES) in the shell blocks of a markdown text."""
    out = []
    for lang, body, _ in code_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line in body.replace('\\\n', ' ').splitlines():
            line = re.sub(r'^\s*\$\s+', '', line).strip()
            line = re.sub(r'\s+#.*$', '', line)
            # "cmd A   /   cmd B" on one line: two synopses
            for part in re.split(r'\s+/\s+', line):
                if part.startswith(PREFIXES):
                    out.append(part.strip())
    return out


def script_of(cmd):
    """'tools/x.py' or 'make target' for a command."""
    words = cmd.split()
    if words[0] == 'make':
        target = next((w for w in words[1:] if '=' not in w and not w.startswith('-')), 'all')
        return f'make {target}'
    for w in words:
        if w.startswith('tools/'):
            return w
    raise AssertionError(f'no tools/ script in {cmd!r}')


def is_synopsis(cmd):
    """A usage line with placeholders (CONFIG, SRC, [--opt ...]) rather than a real command."""
    return bool(re.search(r'\[|\.\.\.|\b[A-Z][A-Z_]{2,}\b(?!=)', cmd.split(' ', 2)[-1]))


def all_commands():
    found = []
    for path in DOCS:
        for cmd in shell_commands(open(path, encoding='utf-8').read()):
            found.append((rel(path), cmd))
    return found


COMMANDS = all_commands()


def test_the_docs_exist_and_have_commands():
    names = {osp.basename(p) for p in DOCS}
    for doc in ('methods.md', 'get_started.md', 'configs.md', 'tools.md', 'model_zoo.md', 'faq.md',
                'installation.md'):
        assert doc in names, doc
    scripts = {script_of(c) for _, c in COMMANDS}
    for s in ('make demo', 'make test', 'tools/train.py', 'tools/test.py', 'tools/dist_train.sh',
              'tools/model_converters/cls2det.py', 'tools/analysis_tools/eval_model_zoo.py'):
        assert s in scripts, s


# ------------------------------------------------------------------ every command covered
def _makefile_targets():
    text = open(osp.join(REPO, 'Makefile')).read()
    return set(re.findall(r'^([A-Za-z][\w-]*)\s*:', text, re.M)), text


@pytest.mark.parametrize('doc,cmd', COMMANDS, ids=[f'{d}:{c[:60]}' for d, c in COMMANDS])
def test_command_is_run_here_or_exercised_by_a_named_test(doc, cmd):
    script = script_of(cmd)
    if script.startswith('make '):
        targets, text = _makefile_targets()
        assert script[5:] in targets, f'{doc}: {cmd!r}: no target {script[5:]!r} in the Makefile'
        for var in re.findall(r'\b([A-Z_]+)=', cmd):
            assert re.search(rf'^{var}\s*[?:]?=', text, re.M), f'{doc}: {cmd!r}: {var} unknown'
    else:
        assert osp.isfile(osp.join(REPO, script)), f'{doc}: {cmd!r}: {script} does not exist'
    if script.startswith(RUN_HERE):
        return  # run by test_concrete_commands_run (concrete ones) / test_help (synopses)
    where = EXERCISED_BY.get(script)
    if where is None:  # another developer's tool: a test file must run it
        users = [
            t for t in glob.glob(osp.join(REPO, 'tests', '**', 'test_*.py'), recursive=True)
            if not t.endswith('test_docs.py') and script in open(t).read()
        ]
        assert users, (
            f'{doc}: {cmd!r} is neither run by tests/test_docs/test_docs.py nor by any test '
            f'(no tests/**/test_*.py mentions {script}); add it to EXERCISED_BY')
        return
    if where.startswith('tests/'):
        path, _, func = where.partition('::')
        text = open(osp.join(REPO, path)).read()
        assert re.search(rf'^def {func}\(', text, re.M), f'{where} does not exist'
        name = script[5:] if script.startswith('make ') else script
        assert name in text or osp.basename(name) in text or 'DEMO_CONFIG' in text, \
            f'{where} does not mention {name}'


def _python_scripts():
    return sorted({script_of(c) for _, c in COMMANDS if script_of(c).endswith('.py')})


@pytest.mark.parametrize('script', _python_scripts())
def test_help(script, capsys, monkeypatch):
    """Every Python tool the docs name parses ``--help`` and exits 0."""
    monkeypatch.setattr(sys, 'argv', [script, '--help'])
    monkeypatch.syspath_prepend(REPO)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(osp.join(REPO, script), run_name='__main__')
    assert e.value.code in (0, None)
    assert 'usage' in capsys.readouterr().out.lower()


# ------------------------------------------------------------ commands run here, verbatim
def _timm():
    return pytest.importorskip('timm')


def _make_source(path, script, cmd):
    """A small state dict at ``path`` in the format ``script`` converts."""
    os.makedirs(osp.dirname(path) or '.', exist_ok=True)
    if script.endswith('xcit2mmcondattn.py'):
        timm = _timm()
        m = timm.models.xcit.Xcit(
            img_size=64,
            patch_size=16,
            embed_dim=64,
            depth=2,
            num_heads=4,
            num_classes=10,
            eta=1.0,
            tokens_norm=True)
        torch.save({'model': m.state_dict()}, path)
    elif script.endswith('vit2mmcondattn.py'):
        timm = _timm()
        m = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=10)
        torch.save(m.state_dict(), path)
    elif script.endswith('swin2mmcondattn.py'):
        timm = _timm()
        m = timm.models.swin_transformer.SwinTransformer(
            img_size=128,
            patch_size=4,
            window_size=2,
            embed_dim=16,
            depths=(2, 2, 2, 2),
            num_heads=(1, 2, 2, 4),
            num_classes=10)
        torch.save(m.state_dict(), path)
    else:  # cls2det: an mmpretrain classifier of this package
        from mmengine.registry import DefaultScope
        from mmpretrain.registry import MODELS
        from mmpretrain.utils import register_all_modules

        import mmcondattn.openmmlab  # noqa: F401
        register_all_modules(init_default_scope=False)
        family = re.search(r'--family\s+(\w+)', cmd)
        family = family.group(1) if family else 'xcit'
        backbone = dict(
            xcit=dict(
                type='ConditionedXCiT',
                arch=dict(embed_dims=48, depth=2, num_heads=4),
                conditioning=dict(precond=dict())),
            vit=dict(
                type='ConditionedViT',
                img_size=32,
                patch_size=8,
                arch=dict(embed_dims=48, num_layers=2, num_heads=3, feedforward_channels=96)),
            swin=dict(
                type='ConditionedSwin',
                img_size=32,
                window_size=4,
                out_indices=(1, ),
                arch=dict(embed_dims=24, depths=(1, 1), num_heads=(2, 2))))[family]
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            model = MODELS.build(
                dict(
                    type='ImageClassifier',
                    backbone=backbone,
                    head=dict(type='LinearClsHead', num_classes=10, in_channels=48)))
        torch.save({'state_dict': model.state_dict()}, path)


def _concrete(prefix):
    return [(d, c) for d, c in COMMANDS if script_of(c).startswith(prefix) and not is_synopsis(c)]


def _run(cmd, cwd):
    args = shlex.split(cmd)
    args = [a for a in args if a not in ('python', '.venv/bin/python', 'bash')]
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, osp.join(REPO, args[0])] + args[1:],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600)


@pytest.mark.e2e
def test_concrete_commands_run(tmp_path):
    """The converter and dataset commands of the docs, run verbatim in a temporary folder on
    state dicts made here (in doc order, so a later command may use an earlier output)."""
    cmds = _concrete('tools/model_converters/') + _concrete('tools/misc/generate_dataset.py')
    assert cmds, 'no concrete converter / dataset command found in the docs'
    for doc, cmd in cmds:
        cwd = tmp_path / re.sub(r'\W', '_', doc)
        cwd.mkdir(exist_ok=True)
        script = script_of(cmd)
        if 'model_converters' in script:
            src = shlex.split(cmd)[shlex.split(cmd).index(script) + 1]
            if not (cwd / src).exists():
                _make_source(str(cwd / src), script, cmd)
        r = _run(cmd, cwd)
        assert r.returncode == 0, f'{doc}: {cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}'
        if 'model_converters' in script:
            dst = shlex.split(cmd)[shlex.split(cmd).index(script) + 2]
            ckpt = torch.load(str(cwd / dst), weights_only=True)
            assert ckpt['state_dict'], cmd


# ----------------------------------------------------------------- paths and links exist
def _doc_texts():
    return [(rel(p), open(p, encoding='utf-8').read()) for p in DOCS]


def test_every_tools_script_and_config_path_mentioned_exists():
    missing = []
    for doc, text in _doc_texts():
        for path in set(re.findall(r'(?<![\w./-])(tools/[\w./-]+\.(?:py|sh))', text)):
            if not osp.isfile(osp.join(REPO, path)):
                missing.append((doc, path))
        for path in set(re.findall(r'(?<![\w./:-])(configs/[\w./-]+\.(?:py|yml))', text)):
            if not osp.isfile(osp.join(REPO, path)):
                missing.append((doc, path))
        for path in set(re.findall(r'(?<![\w./-])(mmcondattn/[\w./-]+\.py)', text)):
            if not osp.isfile(osp.join(REPO, path)):
                missing.append((doc, path))
        for path in set(re.findall(r'(?<![\w./-])(tests/test_\w+\.py)', text)):
            if not osp.isfile(osp.join(REPO, path)):
                missing.append((doc, path))
    assert not missing, missing


def _slug(heading):
    """GitHub's anchor for a heading."""
    s = heading.strip().lower()
    s = re.sub(r'[^\w\- ]', '', s)
    return s.replace(' ', '-')


# docs other developers write; links to them are checked once they exist
PENDING = {'docs/monitoring.md', 'docs/performance.md'}


def test_links_resolve():
    bad = []
    for doc, text in _doc_texts():
        text = re.sub(r'```.*?```', '', text, flags=re.S)
        for target in re.findall(r'\]\(([^)\s]+)\)', text) + \
                re.findall(r'^\[[^\]]+\]:\s*(\S+)', text, re.M):
            if re.match(r'^[a-z]+://', target):
                continue
            path, _, anchor = target.partition('#')
            full = osp.normpath(osp.join(REPO, osp.dirname(doc), path)) if path else \
                osp.join(REPO, doc)
            if not osp.exists(full):
                if rel(full) not in PENDING:
                    bad.append((doc, target, 'no such file'))
                continue
            if anchor and full.endswith('.md'):
                heads = re.findall(r'^#+\s+(.*)$', open(full, encoding='utf-8').read(), re.M)
                if anchor not in {_slug(h) for h in heads}:
                    bad.append((doc, target, 'no such heading'))
    assert not bad, bad


# ---------------------------------------------------------------- the options table
def _options_table():
    text = open(osp.join(REPO, 'docs/methods.md'), encoding='utf-8').read()
    section = text.split('\n## Options', 1)[1].split('\n## ', 1)[0]
    rows = [r for r in section.splitlines() if r.startswith('|')]
    head = [c.strip() for c in rows[0].strip('|').split('|')]
    assert head[:4] == ['method', 'option', 'default', 'valid values'], head
    table = {}
    for r in rows[2:]:
        cells = [c.strip() for c in r.strip('|').split('|')]
        key = (cells[0], cells[1].strip('`'))
        assert key not in table, f'{key} twice in the options table'
        table[key] = (cells[2].strip('`'), cells[3])
    return table


def test_options_table_equals_options_py():
    from mmcondattn.conditioning import options as O  # noqa: E741  the module of the table
    table = _options_table()
    fields = {
        (name, f.name): f
        for name, cls in O._OPTIONS.items()
        for f in dataclasses.fields(cls)
    }
    assert set(table) == set(fields), (f'in the table only: {sorted(set(table) - set(fields))}; '
                                       f'in options.py only: {sorted(set(fields) - set(table))}')
    for key, (default, valid) in table.items():
        assert ast.literal_eval(default) == fields[key].default, (key, default)
        quoted = set(re.findall(r"`'(\w+)'`", valid))
        choices = {
            ('spectral', 'mode'): O.SPECTRAL_MODES,
            ('spectral', 'targets'): O.SPECTRAL_TARGETS,
            ('tokens', 'solver'): O.TOKEN_SOLVERS,
            ('tokens', 'position'): O.TOKEN_POSITIONS
        }.get(key)
        if choices is not None:
            assert quoted == set(choices), (key, quoted, choices)
        elif isinstance(fields[key].default, bool):
            assert '`True`' in valid and '`False`' in valid, key


def test_options_table_values_are_accepted_and_neighbours_refused():
    """The bounds the table states are the ones the parser enforces."""
    from mmcondattn.conditioning import ConditioningConfigError, parse_conditioning
    ok = [
        dict(precond=dict(eps=1e-9, scale=0.5)),
        dict(spectral=dict(lam=0.)),
        dict(spectral=dict(targets=('k', ))),
        dict(tokens=dict(ns_iters=1))
    ]
    bad = [
        dict(precond=dict(eps=0.)),
        dict(precond=dict(scale=0.)),
        dict(spectral=dict(lam=-1.)),
        dict(spectral=dict(targets=())),
        dict(spectral=dict(targets=('q', 'q'))),
        dict(tokens=dict(ns_iters=0))
    ]
    for cfg in ok:
        parse_conditioning(cfg)
    for cfg in bad:
        with pytest.raises(ConditioningConfigError):
            parse_conditioning(cfg)


# -------------------------------------------------------------- runnable snippets
def _run_python(code, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    r = subprocess.run([sys.executable, '-c', code],
                       cwd=cwd,
                       env=env,
                       capture_output=True,
                       text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.mark.slow
def test_lambda_entropy_numbers_are_the_scripts_output(tmp_path):
    doc, _, code = doctest_blocks()['lambda-entropy']
    out = _run_python(code, tmp_path)
    got = {
        float(lam): (float(e), float(s))
        for lam, e, s in re.findall(r'lam=([\d.]+) entropy=([\d.]+) self=([\d.]+)', out)
    }
    assert sorted(got) == [0., 1., 2., 5., 10.], out
    text = open(osp.join(REPO, doc), encoding='utf-8').read()
    lams = [float(v) for v in re.search(r'^\| λ \|(.*)\|$', text, re.M).group(1).split('|')]
    ent = re.search(r'^\| entropy \(nats\), the script below[^|]*\|(.*)\|$', text, re.M)
    own = re.search(r'^\| mean attention weight on itself, the script below \|(.*)\|$', text, re.M)
    for row, idx in ((ent, 0), (own, 1)):
        cells = [c.strip() for c in row.group(1).split('|')]
        for lam, cell in zip(lams, cells):
            digits = len(cell.split('.')[1]) if '.' in cell else 0
            assert round(got[lam][idx], digits) == float(cell), (lam, cell, got[lam])


@pytest.mark.slow
def test_fold_snippet_runs():
    _run_python(doctest_blocks()['fold'][2], REPO)


@pytest.mark.slow
def test_own_config_example_builds(tmp_path):
    """The 'your own config' example of docs/configs.md, saved where it says, builds a
    detector with the preconditioned XCiT and runs a forward."""
    doc, _, code = doctest_blocks()['own-config']
    text = open(osp.join(REPO, doc), encoding='utf-8').read()
    name = re.search(r'say `(my_configs/[\w.-]+\.py)`', text).group(1)
    (tmp_path / 'configs').symlink_to(osp.join(REPO, 'configs'))
    (tmp_path / 'my_configs').mkdir()
    (tmp_path / name).write_text(code)
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import mmcondattn.openmmlab  # noqa: F401
    from mmcondattn.compat import replace_syncbn
    cfg = Config.fromfile(str(tmp_path / name))
    assert cfg.model.backbone.conditioning == dict(precond=dict())
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    replace_syncbn(cfg.model)
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model).eval()
    assert model.backbone.num_conditioned_attention == 12
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256] * 5


@pytest.mark.slow
def test_fold_deployment_recipe_of_tools_md(tmp_path):
    """docs/tools.md: fold a spectral XCiT Mask R-CNN checkpoint, load it into the baseline
    config: same backbone features."""
    _, _, code = doctest_blocks()['fold-detector']
    ckpt = re.search(r"'(work_dirs/[\w./-]+\.pth)'", code).group(1)
    spectral = re.search(r"'(configs/[\w./-]+\.py)'", code).group(1)
    (tmp_path / 'configs').symlink_to(osp.join(REPO, 'configs'))
    from mmdet.apis import init_detector
    from mmdet.utils import register_all_modules

    import mmcondattn.openmmlab  # noqa: F401
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = init_detector(osp.join(REPO, spectral), None, device='cpu')
    os.makedirs(tmp_path / osp.dirname(ckpt))
    torch.save({'state_dict': model.state_dict()}, str(tmp_path / ckpt))
    _run_python(code, tmp_path)
    out = re.search(r"torch\.save\(.*'([\w./-]+\.pth)'\)", code).group(1)
    baseline = spectral.replace('_spectral', '')
    assert osp.isfile(osp.join(REPO, baseline))
    deploy = init_detector(osp.join(REPO, baseline), str(tmp_path / out), device='cpu')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.backbone(x), deploy.backbone(x)):  # W + C rounded in float32
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item())
