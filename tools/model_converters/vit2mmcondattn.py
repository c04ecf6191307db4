"""timm ViT / DeiT -> mmcondattn (mmpretrain) keys.

    python tools/model_converters/vit2mmcondattn.py SRC DST [--force]
"""
import sys

from mmcondattn.converters import convert_vit
from mmcondattn.converters.cli import run_converter


def main(argv=None):
    return run_converter(convert_vit, 'ViT / DeiT (timm) to mmcondattn', argv)


if __name__ == '__main__':
    sys.exit(main())
