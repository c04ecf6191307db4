"""Fashion-MNIST preparation (``make data-fmnist``): un-gzip, IDX header checks, the one-line
error when the data cannot be had, and mmpretrain's stock FashionMNIST reading the result.
The IDX files are tiny fixtures written here, so the suite never needs the Debian package."""
import os.path as osp

import numpy as np
import pytest
from cond_helpers import FMNIST_SIZES, idx_bytes, write_fashion_mnist_fixture
from conftest import run_tool

from mmcondattn.datasets.fashion_mnist import (FILES, IdxError, check_idx, find_sources,
                                               prepare_fashion_mnist)

TOOL = 'tools/misc/prepare_fashion_mnist.py'


@pytest.mark.slow
def test_ungzips_checks_and_mmpretrain_reads_it(tmp_path):
    arrays = write_fashion_mnist_fixture(tmp_path / 'src')
    sources = find_sources([str(tmp_path / 'missing'), str(tmp_path / 'src')])
    assert sorted(sources) == sorted(FILES) and all(p.endswith('.gz') for p in sources.values())
    out = tmp_path / 'data/fashion_mnist'
    paths = prepare_fashion_mnist(sources, str(out), FMNIST_SIZES)
    assert [osp.basename(p) for p in paths] == list(FILES)
    for name, arr in arrays.items():  # un-gzipped byte for byte: header then the data
        raw = (out / name).read_bytes()
        assert raw == idx_bytes(arr)

    from mmpretrain.datasets import FashionMNIST
    train = FashionMNIST(data_root=str(out), download=False)
    test = FashionMNIST(data_root=str(out), split='test', test_mode=True, download=False)
    assert (len(train), len(test)) == (6, 4)
    item = train.get_data_info(5)
    assert item['img'].shape == (28, 28) and item['img'][5, 5] == 5 and item['gt_label'] == 5
    assert test.get_data_info(0)['img'][0, 0] == 201  # the test split's file
    assert train.metainfo['classes'][0] == 'T-shirt/top'
    # a subset of the train split, as the study configs take it
    assert len(FashionMNIST(data_root=str(out), download=False, indices=3)) == 3


def test_header_checks(tmp_path):
    write_fashion_mnist_fixture(tmp_path / 'src', gz=False)
    path = str(tmp_path / 'src/train-images-idx3-ubyte')
    assert check_idx(path, 'images', 6, 28) == [6, 28, 28]
    with pytest.raises(
            IdxError,
            match=r'dims \[6, 28, 28\]; expected uint8 \(0x08\) '
            r'\[60000, 28, 28\] \(60000 images of 28×28\)'):
        check_idx(path, 'images', 60000, 28)
    with pytest.raises(IdxError, match='expected uint8'):
        check_idx(str(tmp_path / 'src/train-labels-idx1-ubyte'), 'images', 6, 28)
    (tmp_path / 'cut').write_bytes(idx_bytes(np.zeros((6, 28, 28)))[:-5])  # data cut short
    with pytest.raises(IdxError, match='4715 bytes, the header needs 4720'):
        check_idx(str(tmp_path / 'cut'), 'images', 6, 28)
    (tmp_path / 'junk').write_bytes(b'PK\x03\x04 not idx')
    with pytest.raises(IdxError, match='not an IDX file'):
        check_idx(str(tmp_path / 'junk'), 'labels', 6, 28)
    # the real sizes are the default: a fixture of 6 images is refused, nothing is written
    sources = find_sources([str(tmp_path / 'src')])
    with pytest.raises(IdxError, match='60000'):
        prepare_fashion_mnist(sources, str(tmp_path / 'out'))
    assert not (tmp_path / 'out/train-images-idx3-ubyte').exists()


@pytest.mark.e2e
def test_tool_says_in_one_line_what_to_download(tmp_path):
    r = run_tool([TOOL, str(tmp_path / 'fm'), '--src',
                  str(tmp_path / 'none'), '--no-install'],
                 cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ''
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'train-images-idx3-ubyte.gz' in lines[0] and 'github.com/zalandoresearch' in lines[0]
    assert f'into {tmp_path / "fm"}/' in lines[0] and 'dataset-fashion-mnist' in lines[0]

    write_fashion_mnist_fixture(tmp_path / 'src')  # a fixture is not the real dataset: one line too
    r = run_tool([TOOL, str(tmp_path / 'fm'), '--src',
                  str(tmp_path / 'src'), '--no-install'],
                 cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert 'expected uint8 (0x08) [60000, 28, 28]' in r.stderr
