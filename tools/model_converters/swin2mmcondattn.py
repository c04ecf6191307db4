"""Official or timm Swin Transformer -> mmcondattn (mmpretrain / mmdet) keys.

    python tools/model_converters/swin2mmcondattn.py SRC DST [--force]
"""
import sys

from mmcondattn.converters import convert_swin
from mmcondattn.converters.cli import run_converter


def main(argv=None):
    return run_converter(convert_swin, 'Swin (official / timm) to mmcondattn', argv)


if __name__ == '__main__':
    sys.exit(main())
