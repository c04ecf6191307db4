"""mmpretrain classifier checkpoint of a (conditioned) backbone -> detection-backbone init.

    python tools/model_converters/cls2det.py SRC DST [--family xcit|vit|swin] [--force]

Keeps the backbone keys the detection form builds, without the ``backbone.`` prefix (drops
the head and, for XCiT / ViT, the class token and class attention); load the result with
``init_cfg=dict(type='Pretrained', checkpoint=DST)``. (The detection forms also accept the
classifier checkpoint itself: ``init_cfg=dict(type='Pretrained', checkpoint=SRC,
prefix='backbone.')``.)
"""
import sys

from mmcondattn.converters import classifier_to_detector
from mmcondattn.converters.cli import run_converter


def _options(parser):
    parser.add_argument(
        '--family',
        choices=('xcit', 'vit', 'swin'),
        default=None,
        help='backbone family (default: guessed from the keys)')


def main(argv=None):
    return run_converter(classifier_to_detector, 'mmpretrain classifier to detection backbone',
                         argv, _options)


if __name__ == '__main__':
    sys.exit(main())
