"""A small-scale study of what conditioning does, rerun with one command on a CPU machine.

    python tools/analysis_tools/conditioning_study.py --tasks fmnist --claims --docs docs/study.md
    python tools/analysis_tools/conditioning_study.py --docs docs/study.md   # generated shapes

Trains the tiny study configs (``configs/study/``) with every method and seed, then writes
the reports and plots under ``--out-dir`` (and into ``--docs``); finished runs are reused.
What runs and what is written: :mod:`mmcondattn.analysis.study`.
"""
import argparse
import os.path as osp
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

try:
    from mmcondattn.analysis.study import (DEFAULT_LAMS, DEFAULT_METHODS, METHODS, SHAPES_TASKS,
                                           TASKS, StudySettings, run_study)
    from mmcondattn.engine.launch import exits_cleanly
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Baseline vs conditioned tiny models on '
                                'Fashion-MNIST and the generated datasets, several seeds (see the '
                                'docstring of mmcondattn.analysis.study).')
    p.add_argument('--out-dir', default='work_dirs/conditioning_study')
    p.add_argument(
        '--tasks',
        nargs='+',
        default=SHAPES_TASKS,
        choices=list(TASKS),
        help='fmnist: real data (Fashion-MNIST, `make data-fmnist`); cls, det: the '
        'generated shapes (default)')
    p.add_argument(
        '--families', nargs='+', default=None, help='default: every family of the chosen tasks')
    p.add_argument(
        '--methods',
        nargs='+',
        default=DEFAULT_METHODS,
        help=f'of {", ".join(METHODS)}, spectral_lam<λ> (default: '
        f'{" ".join(DEFAULT_METHODS)})')
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--cls-epochs', type=int, default=30)
    p.add_argument('--det-epochs', type=int, default=10)
    p.add_argument('--fmnist-epochs', type=int, default=5)
    p.add_argument(
        '--fmnist-train',
        type=int,
        default=2000,
        help='train on the first N of the 60,000 Fashion-MNIST train images (a fixed '
        'subset; the full 10,000-image test split is evaluated every epoch)')
    p.add_argument(
        '--fmnist-root',
        default='data/fashion_mnist',
        help='the un-gzipped Fashion-MNIST (make data-fmnist)')
    p.add_argument(
        '--lams',
        nargs='+',
        type=float,
        default=DEFAULT_LAMS,
        help='λ of the spectral sweep on fmnist (one run each, first seed)')
    p.add_argument(
        '--scale-data',
        type=float,
        default=1.0,
        help='fraction of the default number of generated images (tests use less)')
    p.add_argument(
        '--report-only',
        action='store_true',
        help='train nothing: report the finished runs of the plan (e.g. while a '
        'long study runs, or after it was cut short)')
    p.add_argument(
        '--claims',
        action='store_true',
        help='fmnist: also measure the papers\' κ claims on the final checkpoints '
        'as tools/analysis_tools/conditioning.py does (claims_fmnist.md, '
        'claim_*.png)')
    p.add_argument(
        '--docs',
        help='also write the report into this page, between its '
        '<!-- study:begin/end --> markers if it has them (plots go to <name>/), '
        'e.g. docs/study.md')
    return p.parse_args(argv)


@exits_cleanly
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    command = 'python tools/analysis_tools/conditioning_study.py ' + ' '.join(argv)
    run_study(StudySettings(**vars(args), config_root=REPO, command=command.strip()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
