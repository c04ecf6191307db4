"""The generated COCO / ImageNet datasets are real-format and self-consistent."""
import json
import os.path as osp

import numpy as np
import pytest
from pycocotools.coco import COCO

from mmcondattn.datasets import SHAPES, make_coco_shapes, make_imagenet_folder


def test_coco_shapes_masks_and_boxes_agree(tmp_path):
    paths = make_coco_shapes(str(tmp_path), num_train=6, num_val=3, img_size=64, seed=3)
    for split, num in (('train', 6), ('val', 3)):
        coco = COCO(paths[split])
        assert len(coco.getImgIds()) == num
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= num  # every image keeps at least one visible object
        for ann in anns:
            m = coco.annToMask(ann)
            assert m.shape == (64, 64) and m.sum() == ann['area'] > 0
            ys, xs = np.nonzero(m)
            x0, y0 = xs.min(), ys.min()
            np.testing.assert_allclose(ann['bbox'], [x0, y0, xs.max() + 1 - x0, ys.max() + 1 - y0])
            assert osp.isfile(
                osp.join(tmp_path, split,
                         coco.loadImgs(ann['image_id'])[0]['file_name']))


def test_coco_shapes_is_deterministic(tmp_path):
    a = make_coco_shapes(str(tmp_path / 'a'), num_train=3, num_val=1, img_size=48, seed=7)
    b = make_coco_shapes(str(tmp_path / 'b'), num_train=3, num_val=1, img_size=48, seed=7)
    c = make_coco_shapes(str(tmp_path / 'c'), num_train=3, num_val=1, img_size=48, seed=8)
    load = lambda p: json.load(open(p))['annotations']  # noqa: E731
    assert load(a['train']) == load(b['train']) != load(c['train'])


@pytest.mark.slow
def test_mmdet_coco_dataset_reads_it(tmp_path):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import DefaultScope
    make_coco_shapes(str(tmp_path), num_train=4, num_val=2, img_size=64, seed=0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        ds = CocoDataset(
            data_root=str(tmp_path),
            ann_file='annotations/instances_train.json',
            data_prefix=dict(img='train/'),
            metainfo=dict(classes=SHAPES),
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                dict(type='PackDetInputs')
            ])
        sample = ds[0]
    inst = sample['data_samples'].gt_instances
    assert sample['inputs'].shape == (3, 64, 64)
    assert len(inst) > 0 and inst.masks.to_ndarray().shape[1:] == (64, 64)


def test_imagenet_folder_layout(tmp_path):
    root = make_imagenet_folder(
        str(tmp_path), num_train_per_class=2, num_val_per_class=1, img_size=32, seed=0)
    lines = open(osp.join(root, 'meta', 'train.txt')).read().split('\n')[:-1]
    assert len(lines) == 2 * len(SHAPES)
    for line in lines:
        rel, label = line.split()
        assert rel.split('/')[0] == SHAPES[int(label)]
        assert osp.isfile(osp.join(root, 'train', rel))
