"""Fashion-MNIST as mmpretrain's stock ``FashionMNIST`` dataset reads it.

The real data (Zalando Research, MIT licence) ships as four gzipped IDX files, e.g. in the
Debian package ``dataset-fashion-mnist`` (under :data:`DEBIAN_DIR`). mmpretrain's
``FashionMNIST`` reads the *un-gzipped* files from its ``data_root``;
:func:`prepare_fashion_mnist` writes them there and checks their IDX headers. Pure Python
(gzip, struct): no framework import.

IDX format (LeCun et al.): a big-endian header of two zero bytes, a type byte (0x08: uint8),
the number of dimensions, then one 4-byte size per dimension; the data follows.
"""
import gzip
import os
import os.path as osp
import shutil
import struct
from typing import Dict, List, Optional, Tuple

__all__ = [
    'DEBIAN_DIR', 'DEBIAN_PACKAGE', 'FILES', 'FASHION_MNIST_SIZES', 'IdxError', 'read_idx_header',
    'check_idx', 'find_sources', 'prepare_fashion_mnist'
]

DEBIAN_PACKAGE = 'dataset-fashion-mnist'
DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
DOWNLOAD_URL = 'https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)'
# the file names mmpretrain's FashionMNIST expects (without .gz): (split, kind)
FILES = {
    'train-images-idx3-ubyte': ('train', 'images'),
    'train-labels-idx1-ubyte': ('train', 'labels'),
    't10k-images-idx3-ubyte': ('test', 'images'),
    't10k-labels-idx1-ubyte': ('test', 'labels'),
}
# the real dataset: images per split, and their side
FASHION_MNIST_SIZES = dict(train=60000, test=10000, side=28)


class IdxError(ValueError):
    """A file that is not the IDX file it should be (one line saying what is wrong)."""


def _open(path):
    return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def read_idx_header(path: str) -> Tuple[int, List[int]]:
    """``(type code, dims)`` of an IDX file, gzipped (``.gz``) or not."""
    try:
        with _open(path) as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b'\0\0':
                raise IdxError(f'{path}: not an IDX file (magic bytes {magic.hex() or "none"})')
            ndim = magic[3]
            raw = f.read(4 * ndim)
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise IdxError(f'{path}: unreadable ({e})') from None
    if len(raw) < 4 * ndim:
        raise IdxError(f'{path}: IDX header cut short')
    return magic[2], list(struct.unpack(f'>{ndim}I', raw))


def check_idx(path: str, kind: str, count: int, side: int) -> List[int]:
    """Check that ``path`` holds ``count`` uint8 ``side``×``side`` images (``kind='images'``)
    or ``count`` uint8 labels (``kind='labels'``), header and data size; returns the dims."""
    code, dims = read_idx_header(path)
    want = [count, side, side] if kind == 'images' else [count]
    if code != 0x08 or dims != want:
        what = f'{count} images of {side}×{side}' if kind == 'images' else f'{count} labels'
        raise IdxError(f'{path}: IDX header says type 0x{code:02x}, dims {dims}; expected '
                       f'uint8 (0x08) {want} ({what})')
    if not path.endswith('.gz'):
        expected = 4 + 4 * len(dims) + _prod(dims)
        actual = osp.getsize(path)
        if actual != expected:
            raise IdxError(f'{path}: {actual} bytes, the header needs {expected}')
    return dims


def _prod(xs):
    out = 1
    for x in xs:
        out *= x
    return out


def find_sources(dirs) -> Optional[Dict[str, str]]:
    """``{name: path}`` of the four files (``name.gz`` or un-gzipped ``name``) in the first of
    ``dirs`` that holds all four, else None."""
    for d in dirs:
        found = {}
        for name in FILES:
            for cand in (osp.join(d, name + '.gz'), osp.join(d, name)):
                if osp.isfile(cand):
                    found[name] = cand
                    break
        if len(found) == len(FILES):
            return found
    return None


def prepare_fashion_mnist(sources: Dict[str, str],
                          out_dir: str,
                          sizes: Optional[dict] = None) -> List[str]:
    """Write the four files un-gzipped into ``out_dir`` (``FashionMNIST``'s ``data_root``)
    and check every header and data size against ``sizes`` (default: the real dataset,
    :data:`FASHION_MNIST_SIZES`). A file already there and correct is kept; the source's
    header is checked before anything is written. Returns the written paths."""
    sizes = dict(FASHION_MNIST_SIZES, **(sizes or {}))
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, (split, kind) in FILES.items():
        src, dst = sources[name], osp.join(out_dir, name)
        args = (kind, sizes[split], sizes['side'])
        if osp.abspath(src) != osp.abspath(dst):
            try:
                check_idx(dst, *args)  # already prepared
            except IdxError:
                check_idx(src, *args)
                tmp = dst + '.part'
                with _open(src) as fin, open(tmp, 'wb') as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)
                os.replace(tmp, dst)
        check_idx(dst, *args)
        written.append(dst)
    return written
