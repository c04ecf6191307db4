"""Official XCiT (ImageNet classifier or COCO Mask R-CNN) or timm XCiT -> mmcondattn keys.

    python tools/model_converters/xcit2mmcondattn.py SRC DST [--force]
"""
import sys

from mmcondattn.converters import convert_xcit
from mmcondattn.converters.cli import run_converter


def main(argv=None):
    return run_converter(convert_xcit, 'XCiT (official / timm) to mmcondattn', argv)


if __name__ == '__main__':
    sys.exit(main())
