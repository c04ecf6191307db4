"""Fashion-MNIST (the real one: 60,000 train / 10,000 test images of 28×28, 10 classes) for
mmpretrain's stock ``FashionMNIST`` dataset (``make data-fmnist``)::

    python tools/misc/prepare_fashion_mnist.py [OUT_DIR] [--src DIR] [--no-install]

Looks for the four IDX files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``, gzipped or not) in ``--src``
(default: where the Debian package ``dataset-fashion-mnist`` puts them,
/usr/share/datasets/fashion-mnist), then in OUT_DIR (default data/fashion_mnist). When they
are in neither, it installs that package with apt-get (as root, else through ``sudo -n``;
``--no-install`` skips this), or says in one line what to download by hand and where to put
it. It then un-gzips the files into OUT_DIR and checks their IDX headers (60,000 / 10,000
uint8 images of 28×28, as many labels). Exit status 2 with one line on any failure.
"""
import argparse
import os
import shutil
import subprocess
import sys

from mmcondattn.datasets.fashion_mnist import (DEBIAN_DIR, DEBIAN_PACKAGE, DOWNLOAD_URL, FILES,
                                               IdxError, find_sources, prepare_fashion_mnist)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('out_dir', nargs='?', default='data/fashion_mnist')
    p.add_argument(
        '--src', default=DEBIAN_DIR, help=f'folder with the IDX files (default {DEBIAN_DIR})')
    p.add_argument(
        '--no-install',
        action='store_true',
        help=f'do not try to install the Debian package {DEBIAN_PACKAGE}')
    return p.parse_args(argv)


def install_package():
    """Try ``apt-get install -y dataset-fashion-mnist`` (after an ``apt-get update`` if the
    first try fails); returns None on success, else why not (a few words)."""
    if shutil.which('apt-get') is None:
        return 'no apt-get on this machine'
    prefix = []
    if os.geteuid() != 0:
        if shutil.which('sudo') is None:
            return 'not root and no sudo'
        prefix = ['sudo', '-n']
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    install = prefix + ['apt-get', 'install', '-y', '-q', DEBIAN_PACKAGE]
    print(f'installing the Debian package {DEBIAN_PACKAGE}: {" ".join(install)}', flush=True)
    r = subprocess.run(install, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(prefix + ['apt-get', 'update', '-q'], env=env, capture_output=True)
        r = subprocess.run(install, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or '').splitlines()
        return f'apt-get failed: {last[-1] if last else f"exit status {r.returncode}"}'
    return None


def main(argv=None):
    args = parse_args(argv)
    dirs = [args.src, args.out_dir]
    sources = find_sources(dirs)
    why = 'not installed (--no-install)'
    if sources is None and not args.no_install:
        why = install_package() or f'the package installed no files in {args.src}'
        sources = find_sources(dirs)
    if sources is None:
        print(
            f'error: Fashion-MNIST not found in {args.src} or {args.out_dir} and the Debian '
            f'package {DEBIAN_PACKAGE} could not be had ({why}); download '
            f'{", ".join(n + ".gz" for n in FILES)} from {DOWNLOAD_URL} into {args.out_dir}/ '
            'and run this again',
            file=sys.stderr)
        return 2
    try:
        paths = prepare_fashion_mnist(sources, args.out_dir)
    except IdxError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{args.out_dir}: Fashion-MNIST ready for mmpretrain FashionMNIST (data_root), '
          f'IDX headers checked (60000 / 10000 images of 28x28): '
          f'{", ".join(os.path.basename(p) for p in paths)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
