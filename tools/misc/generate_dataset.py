"""Generate a small dataset in a real format: COCO instance segmentation or ImageNet folders.

    python tools/misc/generate_dataset.py coco data/shapes_coco
    python tools/misc/generate_dataset.py imagenet data/shapes_imagenet

Deterministic from --seed. An existing folder made with the same settings is kept as is;
one made otherwise (or not by this tool) is never overwritten.
"""
import argparse
import json
import os
import os.path as osp
import sys

from mmcondattn.datasets import make_coco_shapes, make_imagenet_folder

STAMP = 'generated.json'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('format', choices=['coco', 'imagenet'])
    p.add_argument('out_dir')
    p.add_argument(
        '--num-train',
        type=int,
        default=None,
        help='train images (coco, default 32) or per class (imagenet, default 16)')
    p.add_argument(
        '--num-val',
        type=int,
        default=None,
        help='val images (coco, default 8) or per class (imagenet, default 4)')
    p.add_argument('--img-size', type=int, default=None, help='default 128 (coco), 64 (imagenet)')
    p.add_argument(
        '--shape-size',
        type=float,
        nargs=2,
        default=None,
        metavar=('MIN', 'MAX'),
        help='imagenet: shape size as fractions of the image side (default 1/6 1/3)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    coco = args.format == 'coco'
    settings = dict(
        format=args.format,
        seed=args.seed,
        num_train=args.num_train or (32 if coco else 16),
        num_val=args.num_val or (8 if coco else 4),
        img_size=args.img_size or (128 if coco else 64))
    if args.shape_size:
        if coco or not 0 < args.shape_size[0] < args.shape_size[1] <= 1:
            print(
                'error: --shape-size takes MIN MAX with 0 < MIN < MAX <= 1, for imagenet only',
                file=sys.stderr)
            return 2
        settings['shape_size'] = list(args.shape_size)
    stamp = osp.join(args.out_dir, STAMP)
    if osp.isfile(stamp):
        with open(stamp) as f:
            if json.load(f) == settings:
                print(f'{args.out_dir}: already generated with these settings')
                return 0
    if osp.isdir(args.out_dir) and os.listdir(args.out_dir):
        print(
            f'error: {args.out_dir} exists and holds other data; choose an empty or new folder',
            file=sys.stderr)
        return 2
    if coco:
        make_coco_shapes(
            args.out_dir,
            settings['num_train'],
            settings['num_val'],
            settings['img_size'],
            seed=args.seed)
    else:
        make_imagenet_folder(
            args.out_dir,
            settings['num_train'],
            settings['num_val'],
            settings['img_size'],
            seed=args.seed,
            size_range=tuple(settings.get('shape_size', (1 / 6, 1 / 3))))
    with open(stamp, 'w') as f:
        json.dump(settings, f)
    print(f'{args.out_dir}: {args.format} dataset generated ({settings})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
