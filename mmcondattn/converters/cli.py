"""The command line every converter in ``tools/model_converters/`` shares:

    python tools/model_converters/<name>.py SRC DST [--force]

reads SRC with ``torch.load(weights_only=True)``, converts its state dict, and writes
``{'state_dict': ..., 'meta': ...}`` to DST, refusing to overwrite DST without ``--force``.
"""
import argparse
import os.path as osp
import sys
from typing import Callable, List, Optional

from .common import ConversionError, load_state_dict, save_state_dict

__all__ = ['run_converter']


def run_converter(convert: Callable,
                  description: str,
                  argv: Optional[List[str]] = None,
                  add_arguments: Optional[Callable] = None) -> int:
    """Parse ``argv``, convert SRC to DST; returns the exit status (0 ok, 1 error).

    Args:
        convert: ``convert(state_dict, **extra_args) -> state_dict``.
        add_arguments: optional ``f(parser)`` adding converter-specific options, passed to
            ``convert`` as keyword arguments.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='source checkpoint (.pth)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--force', action='store_true', help='overwrite DST if it exists')
    if add_arguments is not None:
        add_arguments(parser)
    args = vars(parser.parse_args(argv))
    src, dst, force = args.pop('src'), args.pop('dst'), args.pop('force')
    if osp.exists(dst) and not force:
        print(f'error: {dst} exists; pass --force to overwrite it', file=sys.stderr)
        return 1
    try:
        out = convert(load_state_dict(src), **args)
        save_state_dict(
            out,
            dst,
            force=force,
            meta=dict(converted_from=osp.basename(src), converter=description))
    except (ConversionError, OSError, RuntimeError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'{src} -> {dst}: {len(out)} keys')
    return 0
