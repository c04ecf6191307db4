"""Tree crowns (``make data-trees``: tools/misc/prepare_trees.py) on a fake deepforest wheel made
here (tiny photographs and VOC XMLs in the wheel's layout): the clipping rule, the spatial
split, mmdet's stock ``CocoDataset`` reading the result, the one-line errors, no silent
overwrite; and the configs/trees models build and give a finite loss."""
import functools
import glob
import importlib.util
import json
import os
import os.path as osp
import random
import re
import subprocess
import sys
import zipfile

import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = 'tools/misc/prepare_trees.py'
TREES_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs/trees/*.py')))
# the fake photographs: stem -> (width, height, [(x0, y0, x1, y1, label)]); tiles of 40 px,
# edge tiles kept from 20 px, the bottom row of the large photograph is val
ARGS = dict(tile=40, min_side=20, val_rows=1)
FAKE = {
    # 5 x 4 tiles (rows 0-2 train, row 3 val), a 15 px strip at the right left out
    '2019_YELL_2_528000_4978000_image_crop2': (
        215,
        160,
        [
            (5, 5, 25, 25, 'Tree'),  # inside tile (0, 0)
            (30, 10, 60, 30, 'Tree'),  # 10 / 30 of it in tile (0, 0), 20 / 30 in (40, 0)
            (45, 105, 65, 125, 'Tree'),  # across the train / val border (y 120): 15 / 20 above
            (100, 130, 120, 150, 'Tree'),  # val
            (202, 50, 212, 60, 'Tree'),  # in the strip left out
            (150, 50, 152, 70, 'Tree'),  # 2 px wide: dropped
        ]),
    '2019_YELL_2_541000_4977000_image_crop': (80, 70, [(10, 10, 30, 30, 'Tree'),
                                                       (50, 45, 70, 65, 'Tree')]),  # 2 x 2 tiles
    'OSBS_029': (40, 40, [(1, 1, 20, 20, 'Tree'), (21, 21, 39, 39, 'Tree')]),
    'SOAP_061': (40, 40, [(2, 3, 22, 23, 'Dead'), (20, 20, 35, 38, 'Alive')]),
}


def voc_xml(filename, width, height, boxes):
    """A Pascal VOC annotation as deepforest ships them."""
    objs = ''.join(
        f'<object><name>{label}</name><pose>Unspecified</pose><truncated>0</truncated>'
        f'<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax>'
        f'<ymax>{y1}</ymax></bndbox></object>' for x0, y0, x1, y1, label in boxes)
    return (f'<annotation><folder>data</folder><filename>{filename}</filename><size><width>'
            f'{width}</width><height>{height}</height><depth>3</depth></size>'
            f'<segmented>0</segmented>{objs}</annotation>')


def write_wheel(path, photos=FAKE, skip=()):
    """A zip in the deepforest wheel's layout (``deepforest/data/<stem>.png`` / ``.xml``)."""
    rng = random.Random(0)
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr('deepforest/__init__.py', '')
        for stem, (w, h, boxes) in photos.items():
            if stem in skip:
                continue
            img = Image.frombytes('RGB', (w, h), rng.randbytes(w * h * 3))
            png = osp.join(osp.dirname(path), f'{stem}.png')
            img.save(png)
            z.write(png, f'deepforest/data/{stem}.png')
            os.remove(png)
            name = f'{stem}.tif' if stem == 'OSBS_029' else f'{stem}.png'  # as in the real one
            z.writestr(f'deepforest/data/{stem}.xml', voc_xml(name, w, h, boxes))
    return str(path)


@pytest.fixture(scope='module')
def trees():
    """tools/misc/prepare_trees.py as a module."""
    spec = importlib.util.spec_from_file_location('prepare_trees', osp.join(REPO, TOOL))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def wheel(tmp_path):
    return write_wheel(tmp_path / 'deepforest-2.1.0-py3-none-any.whl')


@pytest.fixture
def dataset(trees, wheel, tmp_path):
    """The fake wheel prepared into ``tmp_path/data/trees``: (folder, prepare_trees' result)."""
    out = str(tmp_path / 'data/trees')
    return out, trees.prepare_trees(trees.read_wheel(wheel), out, **ARGS)


def _coco(out, split):
    return json.load(open(osp.join(out, 'annotations', f'{split}.json')))


# ------------------------------------------------------------------------- the rules
def test_tile_spans(trees):
    assert trees.tile_spans(2472) == [(y, 400) for y in range(0, 2400, 400)]  # 72 px left out
    assert trees.tile_spans(2299)[-1] == (2000, 299)
    assert trees.tile_spans(1035) == [(0, 400), (400, 400), (800, 235)]
    assert trees.tile_spans(400) == [(0, 400)] and trees.tile_spans(150, 400, 200) == []


def test_clip_box_rule(trees):
    clip = trees.clip_box
    assert clip((10, 10, 30, 30), (0, 0, 40, 40)) == (10, 10, 30, 30)  # inside: as it is
    assert clip((50, 60, 70, 80), (40, 40, 40, 40)) == (10, 20, 30, 40)  # tile coordinates
    assert clip((10, 10, 30, 30), (0, 0, 25, 40)) == (10, 10, 25, 30)  # 75 % kept
    assert clip((10, 10, 30, 30), (0, 0, 20, 40)) == (10, 10, 20, 30)  # 50 %: kept
    assert clip((10, 10, 30, 30), (0, 0, 19, 40)) is None  # 45 %
    assert clip((10, 10, 13, 30), (0, 0, 40, 40)) is None  # 3 px wide, though whole
    assert clip((0, 0, 100, 100), (0, 0, 60, 60), min_keep=0.3) == (0, 0, 60, 60)


def test_voc_labels_are_all_one_class_tree(trees, dataset):
    out, res = dataset
    labels = set()
    for split in trees.SPLITS:
        d = _coco(out, split)
        assert d['categories'] == [{'id': 1, 'name': 'tree'}]
        assert {a['category_id'] for a in d['annotations']} == {1}
        labels |= {a['source_label'] for a in d['annotations']}
    assert labels == {'Tree', 'Dead', 'Alive'}
    assert res['boxes'] == sum(len(b) for _, _, b in FAKE.values())


def test_spatial_split_and_counts(trees, dataset):
    """Whole photographs or bands of tile rows per split, no tile in two splits, the counts
    and the clipped boxes as the rule says."""
    out, res = dataset
    big, test_photo = '2019_YELL_2_528000_4978000_image_crop2', \
        '2019_YELL_2_541000_4977000_image_crop'
    tiles = {
        s: [(im['photo'], im['x0'], im['y0'], im['width'], im['height'])
            for im in _coco(out, s)['images']]
        for s in trees.SPLITS
    }
    assert {t[0] for t in tiles['test']} == {test_photo}
    assert not any(t[0] == test_photo for t in tiles['train'] + tiles['val'])
    assert {t[0] for t in tiles['val']} == {big}
    assert {t[0] for t in tiles['train']} == {big, 'OSBS_029', 'SOAP_061'}
    # the val band lies below every train tile of the same photograph
    assert min(t[2] for t in tiles['val']) >= max(t[2] + t[4]
                                                  for t in tiles['train'] if t[0] == big) == 120
    assert len(tiles['train']) == 15 + 2 and len(tiles['val']) == 5 and len(tiles['test']) == 4
    assert (40, 40) in {t[3:] for t in tiles['test']} and (40, 30) in {t[3:] for t in tiles['test']}
    assert not any(t[0] == big and t[1] >= 200 for ts in tiles.values() for t in ts)  # strip
    # the box across tiles (0, 0) / (40, 0) is kept in the second only, clipped
    train = _coco(out, 'train')
    second = next(im['id'] for im in train['images']
                  if (im['photo'], im['x0'], im['y0']) == (big, 40, 0))
    assert [a['bbox'] for a in train['annotations']
            if a['image_id'] == second] == [[0.0, 10.0, 20.0, 20.0]]
    # the box across the band border: 15 of 20 px above (train), 5 below (val: dropped)
    assert res['counts'] == {'train': (17, 2 + 1 + 4), 'val': (5, 1), 'test': (4, 2)}
    assert res['dropped'] == 2  # the box in the strip left out, the 2 px wide one
    assert len(os.listdir(osp.join(out, 'images'))) == 26


@pytest.mark.slow
def test_mmdet_coco_dataset_reads_it(dataset):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.registry import DefaultScope

    import mmcondattn.openmmlab  # noqa: F401
    out, res = dataset
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'):
        for split in ('train', 'test'):
            ds = DATASETS.build(
                dict(
                    type='CocoDataset',
                    data_root=out,
                    ann_file=f'annotations/{split}.json',
                    data_prefix=dict(img='images/'),
                    metainfo=dict(classes=('tree', )),
                    test_mode=split == 'test',
                    filter_cfg=dict(filter_empty_gt=True, min_size=4),
                    pipeline=[
                        dict(type='LoadImageFromFile'),
                        dict(type='LoadAnnotations', with_bbox=True),
                        dict(type='PackDetInputs')
                    ]))
            boxes = 0
            for i in range(len(ds)):
                sample = ds[i]
                inst = sample['data_samples'].gt_instances
                assert sample['inputs'].shape[0] == 3 and set(inst.labels.tolist()) <= {0}
                boxes += len(inst)
            assert boxes == res['counts'][split][1]
    assert len(ds) == res['counts']['test'][0]


# ------------------------------------------------------------------- errors, no overwrite
def test_missing_wheel_is_one_line_and_writes_nothing(trees, tmp_path, capsys, monkeypatch):
    out = tmp_path / 'data/trees'
    assert trees.main([str(out), '--wheel', str(tmp_path / 'nowhere.whl')]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and err.startswith('error: no deepforest wheel at ')
    assert '--wheel PATH' in err and 'deepforest-2.1.0-py3-none-any.whl' in err
    # pip fails (no network): the same, with pip's last line
    failing = [sys.executable, '-c', 'import sys; sys.exit("ERROR: no network here")']
    monkeypatch.setattr(trees, 'download_wheel',
                        functools.partial(trees.download_wheel, pip=failing))
    assert trees.main([str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'could not download deepforest==2.1.0 with pip ' \
        '(ERROR: no network here)' in err and '--wheel PATH' in err
    assert not out.exists() and not (tmp_path / 'data').exists()


def test_wheel_without_the_photographs(trees, tmp_path):
    path = write_wheel(tmp_path / 'x.whl', skip=('SOAP_061', ))
    with pytest.raises(trees.TreesError, match=r'lacks deepforest/data/SOAP_061\.png'):
        trees.read_wheel(path)
    (tmp_path / 'y.whl').write_text('not a zip')
    with pytest.raises(trees.TreesError, match='not a zip'):
        trees.read_wheel(str(tmp_path / 'y.whl'))


def test_no_silent_overwrite(trees, dataset, wheel, capsys):
    out, _ = dataset
    ann = osp.join(out, 'annotations/train.json')
    os.utime(ann, (1, 1))
    with pytest.raises(trees.TreesError, match='already holds a dataset.*--overwrite'):
        trees.prepare_trees(trees.read_wheel(wheel), out, **ARGS)
    # the command: a complete dataset is reported and left as it is (exit 0: `make` again)
    assert trees.main([out, '--wheel', wheel]) == 0
    assert 'already holds a dataset (train 17 images / 7 boxes' in capsys.readouterr().out
    assert os.stat(ann).st_mtime == 1
    os.remove(osp.join(out, 'annotations/val.json'))  # an incomplete one: an error
    assert trees.main([out, '--wheel', wheel]) == 2
    assert 'incomplete or broken dataset' in capsys.readouterr().err and os.stat(ann).st_mtime == 1
    stale = osp.join(out, 'images', 'stale.png')
    open(stale, 'w').close()
    assert trees.main([
        out, '--wheel', wheel, '--tile-size', '40', '--min-tile-side', '20', '--val-rows', '1',
        '--overwrite'
    ]) == 0
    assert not osp.exists(stale) and os.stat(ann).st_mtime != 1
    assert osp.isfile(osp.join(out, 'annotations/val.json'))


@pytest.mark.e2e
def test_command_line(wheel, tmp_path):
    """The tool as a command: one line with the counts; a missing wheel, one line, exit 2."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, osp.join(REPO, TOOL)]
    r = subprocess.run(
        cmd + [
            'data/trees', '--wheel', wheel, '--tile-size', '40', '--min-tile-side', '20',
            '--val-rows', '1'
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout.count('\n') == 1
    assert re.fullmatch(
        r'data/trees: 4 deepforest 2\.1\.0 photographs in 40 px tiles, class tree: train 17 '
        r'images / 7 boxes, val 5 images / 1 boxes, test 4 images / 2 boxes \(of 12 boxes in '
        r'the XMLs, 2 left out by the tiling rule\)\n', r.stdout)
    r = subprocess.run(
        cmd + ['elsewhere', '--wheel', 'missing.whl'],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True)
    assert r.returncode == 2 and r.stdout == '' and r.stderr.count('\n') == 1
    assert 'Traceback' not in r.stderr and not (tmp_path / 'elsewhere').exists()


def test_make_targets():
    """`make data-trees` runs the tool into data/trees; `make demo-trees` trains the XCiT
    baseline of configs/trees after it."""
    text = open(osp.join(REPO, 'Makefile')).read()
    data = re.search(r'^data-trees:.*\n\t(.*)\n', text, re.M)
    demo = re.search(r'^demo-trees: data-trees\n\t(.*)\n', text, re.M)
    assert data and data.group(1) == f'@$(PY) {TOOL} data/trees'
    assert demo and demo.group(1).startswith(
        '$(PY) tools/train.py configs/trees/retinanet_xcit-tiny-p8_fpn_trees.py --work-dir ')
    assert re.search(r'^\.PHONY:.*\bdata-trees\b.*\bdemo-trees\b', text, re.M)


# ------------------------------------------------------------------------------ configs
def test_config_family_and_methods():
    import yaml
    names = [osp.basename(p)[:-3] for p in TREES_CONFIGS]
    base = 'retinanet_xcit-tiny-p8_fpn_trees'
    assert base in names and 'retinanet_vit-tiny-p16_fpn_trees' in names
    assert 'retinanet_swin-tiny-p4-w7_fpn_trees' in names
    for method in ('precond', 'spectral', 'tokens'):
        text = open(osp.join(REPO, f'configs/trees/retinanet_xcit-tiny-p8_{method}_fpn_trees.py'))
        code = [ln for ln in text.read().splitlines() if ln and not ln.startswith('#')]
        assert code == [
            f"_base_ = './{base}.py'",
            f'model = dict(backbone=dict(conditioning=dict({method}=dict())))'
        ]
    meta = yaml.safe_load(open(osp.join(REPO, 'configs/trees/metafile.yml')))
    assert sorted(m['Name'] for m in meta['Models']) == sorted(names)
    assert all('Results' not in m and 'Weights' not in m for m in meta['Models'])


@pytest.mark.slow
@pytest.mark.parametrize('path', TREES_CONFIGS, ids=osp.basename)
def test_config_builds_and_trains_a_step(path):
    """Loads, builds in mmdet's scope, gives a finite loss on a 96 px image with two trees and
    reads the prepared data's files (data/trees, one class)."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.utils import register_all_modules
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData

    import mmcondattn.openmmlab  # noqa: F401
    cfg = Config.fromfile(path)
    assert cfg.train_dataloader.dataset.data_root == 'data/trees/'
    assert cfg.train_dataloader.dataset.metainfo.classes == ('tree', )
    assert cfg.test_evaluator.ann_file.endswith('annotations/test.json')
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
        sample = DetDataSample(metainfo=dict(img_shape=(96, 96), pad_shape=(96, 96)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10., 10., 40., 42.], [50., 60., 80., 88.]]),
            labels=torch.tensor([0, 0]))
        data = model.data_preprocessor(
            dict(
                inputs=[torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)],
                data_samples=[sample]), True)
        total, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(total) and total > 0
