"""The checks that need a GPU, in one report (under 8 minutes on one H200).

Examples::

    tools/analysis_tools/gpu_check.sh                 # on a machine with CUDA
    tools/analysis_tools/gpu_check.sh --dry-run       # the same code paths on CPU, tiny sizes
    tools/analysis_tools/gpu_check.sh --models timm   # torch + timm alone (no mmcv CUDA ops)

Writes ``work_dirs/gpu_check/<timestamp>/gpu_check.md`` (or ``--out DIR/gpu_check.md``; an
existing report is never overwritten) and exits with 1 if a check fails. See
:mod:`mmcondattn.analysis.gpu_check` for what is measured.
"""
import argparse
import sys
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)

from mmcondattn.analysis.benchmark import MODEL_SOURCES  # noqa: E402  (torch alone)
from mmcondattn.errors import exits_cleanly  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--dry-run',
        action='store_true',
        help='run on CPU at tiny sizes (what needs CUDA is reported as skipped)')
    p.add_argument(
        '--out', help='report folder, new or empty (default: '
        'work_dirs/gpu_check/<timestamp>)')
    p.add_argument(
        '--models',
        choices=MODEL_SOURCES,
        default='openmmlab',
        help="the registered backbones and the headline config (default), or timm's "
        'ViT / Swin / XCiT with torch and timm alone, for a GPU stack without mmcv\'s CUDA ops '
        '(a DDP part instead of dist_train)')
    return p.parse_args(argv)


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    from mmcondattn.analysis.gpu_check import run_gpu_check
    _, passed = run_gpu_check(args.out, dry_run=args.dry_run, models=args.models)
    return 0 if passed else 1


if __name__ == '__main__':
    sys.exit(main())
