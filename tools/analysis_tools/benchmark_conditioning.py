"""Speed and memory of conditioned attention against the unconditioned twin, as markdown.

Examples::

    # the CPU tables of docs/performance.md (replaced between its benchmark markers)
    python tools/analysis_tools/benchmark_conditioning.py --out docs/performance.md
    # the compiled tables (torch.compile, inductor) between the benchmark-compiled markers
    python tools/analysis_tools/benchmark_conditioning.py --compile --no-detector \\
        --no-solvers --out docs/performance.md
    # torch and timm alone (timm's DeiT-S / Swin-T / XCiT-S12; no OpenMMLab stack needed)
    python tools/analysis_tools/benchmark_conditioning.py --models timm --device cuda
    # a quick look at one family and method on a GPU
    python tools/analysis_tools/benchmark_conditioning.py --families xcit --methods precond \\
        --device cuda --out work_dirs/bench.md

See :mod:`mmcondattn.analysis.benchmark` for what is measured and how.
"""
import argparse
import os.path as osp
import sys

import torch

from mmcondattn.analysis.benchmark import (FAMILIES, METHODS, MODEL_SOURCES, SIZES,
                                           BenchmarkSettings, render_markdown, run_benchmark)
from mmcondattn.analysis.report import command_line, write_markdown

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# whole Mask R-CNN rows: (label, config); ratios are against the first row (plain XCiT-S12)
DETECTORS = (
    ('XCiT-S12/16 plain', 'configs/xcit/mask-rcnn_xcit-s12-p16_fpn_ms-crop-3x_coco.py'),
    ('XCiT-S12/16 precond', 'configs/xcit/mask-rcnn_xcit-s12-p16_precond_fpn_ms-crop-3x_coco.py'),
    ('Swin-T stock mmdet (reference)', 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
)


def parse_hw(text: str):
    """'512' -> (512, 512); '800x1333' -> (800, 1333)."""
    h, _, w = text.lower().partition('x')
    return int(h), int(w or h)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--families',
        nargs='+',
        default=list(FAMILIES),
        help=f'backbone families (default: all of {", ".join(FAMILIES)})')
    p.add_argument(
        '--methods',
        nargs='+',
        default=list(METHODS),
        help=f'methods (default: all of {", ".join(METHODS)})')
    p.add_argument(
        '--sizes',
        nargs='+',
        default=list(SIZES),
        help='cls (classification form) and/or det (detection form; also the '
        'whole-detector rows)')
    p.add_argument(
        '--img-size',
        nargs='+',
        default=[],
        metavar='SIZE=HxW',
        help='input sizes, e.g. cls=224 det=800x1333 (defaults: cls 224, det 512 '
        'on CPU / 800x1333 on GPU; --tiny: 32 and 64)')
    p.add_argument(
        '--batch-size',
        type=int,
        default=None,
        help='classification batch (default 4 on CPU, 8 on GPU)')
    p.add_argument(
        '--det-batch-size',
        type=int,
        default=None,
        help='detection batch (default 1 on CPU, 2 on GPU)')
    p.add_argument(
        '--repeats', type=int, default=7, help='timed rounds (each model once per round; medians)')
    p.add_argument('--warmup', type=int, default=2, help='untimed calls per model first')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--tiny', action='store_true', help='tiny archs and images (tests)')
    p.add_argument(
        '--models',
        choices=MODEL_SOURCES,
        default='openmmlab',
        help="the registered backbones (default), or timm's with torch and timm alone (no "
        'layer or Mask R-CNN rows)')
    p.add_argument(
        '--no-layers', action='store_true', help='skip the table of single attention layers')
    p.add_argument('--no-detector', action='store_true', help='skip the Mask R-CNN rows')
    p.add_argument('--no-solvers', action='store_true', help='skip the token-solver table')
    p.add_argument(
        '--compile',
        action='store_true',
        help='time torch.compile-d twins in the backbone and layer tables (compiled during '
        'the untimed warm-up, at least one call); --out fills the benchmark-compiled markers')
    p.add_argument(
        '--compile-backend',
        default='inductor',
        help='torch.compile backend with --compile (default: inductor)')
    p.add_argument(
        '--out',
        help='markdown file to write (replaces only the part between '
        '<!-- benchmark:begin --> and <!-- benchmark:end --> if it has them; with --compile '
        'between <!-- benchmark-compiled:begin --> and <!-- benchmark-compiled:end -->)')
    args = p.parse_args(argv)
    try:
        img_size = {}
        for item in args.img_size:
            size, _, hw = item.rpartition('=')
            for s in [size] if size else SIZES:
                img_size[s] = parse_hw(hw)
    except ValueError:
        p.error(f'--img-size takes SIZE=HxW or HxW items (SIZE in {", ".join(SIZES)}), got '
                f'{args.img_size}')
    batch = {k: v for k, v in (('cls', args.batch_size), ('det', args.det_batch_size)) if v}
    try:
        settings = BenchmarkSettings(
            families=args.families,
            methods=args.methods,
            sizes=args.sizes,
            img_size=img_size,
            batch_size=batch,
            repeats=args.repeats,
            warmup=args.warmup,
            device=args.device,
            tiny=args.tiny,
            layers=False if args.no_layers else None,
            detectors=() if args.no_detector or args.models == 'timm' else
            [(label, cfg if cfg.startswith('mmdet::') else osp.join(REPO, cfg))
             for label, cfg in DETECTORS],
            solvers=not args.no_solvers,
            compile=args.compile,
            compile_backend=args.compile_backend,
            models=args.models)
    except ValueError as e:
        p.error(str(e))
    tag = out_tag(args.compile)
    if args.out and osp.isfile(args.out):
        with open(args.out, encoding='utf-8') as f:
            text = f.read()
        other = out_tag(not args.compile)
        if f'<!-- {other}:begin -->' in text and f'<!-- {tag}:begin -->' not in text:
            p.error(f'{args.out} has <!-- {other}:begin --> but no <!-- {tag}:begin --> '
                    f'marker: it would be overwritten whole')
    return args, settings


def out_tag(compiled: bool) -> str:
    """The markers of ``--out``: compiled tables get their own place in a document."""
    return 'benchmark-compiled' if compiled else 'benchmark'


def main(argv=None):
    args, settings = parse_args(argv)
    text = render_markdown(
        run_benchmark(settings),
        command_line(sys.argv if argv is None else [sys.argv[0], *argv], root=REPO))
    if args.out:
        write_markdown(args.out, text, tag=out_tag(args.compile))
        print(f'wrote {args.out}')
    else:
        print(text)


if __name__ == '__main__':
    main()
