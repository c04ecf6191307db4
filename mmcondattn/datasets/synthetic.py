"""Small deterministic datasets in the real formats, for tests and quick starts.

* :func:`make_coco_shapes`: COCO instance segmentation (``annotations/instances_{split}.json``
  with RLE masks, ``{split}/*.png``), read by pycocotools and mmdet's ``CocoDataset``.
* :func:`make_imagenet_folder`: an ImageNet-style folder tree (``{split}/{class}/*.png``),
  read by mmpretrain's ``CustomDataset``/``ImageNet``.

Both are a pure function of their arguments (numpy ``default_rng(seed)``).
"""
import json
import os
import os.path as osp

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SHAPES = ('rectangle', 'circle', 'triangle')
# Well separated colours so the task is easy: shape class is independent of colour.
_COLOURS = np.array(
    [[230, 60, 60], [60, 200, 60], [70, 90, 240], [240, 200, 40], [200, 70, 220], [40, 210, 220]],
    dtype=np.uint8)


def _draw(kind, canvas_hw, rng, size_range=(1 / 6, 1 / 3)):
    """A binary mask (H, W) of one random shape of ``kind``, its size a fraction in
    ``size_range`` of the shorter side."""
    h, w = canvas_hw
    m = np.zeros((h, w), np.uint8)
    size = int(rng.integers(int(min(h, w) * size_range[0]), int(min(h, w) * size_range[1])))
    cx = int(rng.integers(size // 2 + 1, w - size // 2 - 1))
    cy = int(rng.integers(size // 2 + 1, h - size // 2 - 1))
    r = size // 2
    if kind == 'rectangle':
        rw, rh = r, max(2, int(r * rng.uniform(0.5, 1.0)))
        cv2.rectangle(m, (cx - rw, cy - rh), (cx + rw, cy + rh), 1, thickness=-1)
    elif kind == 'circle':
        cv2.circle(m, (cx, cy), r, 1, thickness=-1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(m, [pts], 1)
    return m


def _background(hw, rng):
    """A smooth noisy background (H, W, 3) uint8."""
    base = rng.integers(20, 90, size=3)
    img = np.empty((*hw, 3), np.float32)
    img[:] = base
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _coco_image(hw, rng, max_objects, min_area):
    """Draw one image; returns (image (H, W, 3) uint8, [(category_id, mask (H, W))])."""
    img = _background(hw, rng)
    visible = np.zeros(hw, np.int32)  # which object owns each pixel (0 = none)
    cats = []
    for k in range(int(rng.integers(1, max_objects + 1))):
        cat = int(rng.integers(len(SHAPES)))
        m = _draw(SHAPES[cat], hw, rng).astype(bool)
        visible[m] = k + 1  # later shapes occlude earlier ones
        img[m] = _COLOURS[rng.integers(len(_COLOURS))]
        cats.append(cat + 1)
    objs = []
    for k, cat in enumerate(cats):
        m = (visible == k + 1).astype(np.uint8)
        if m.sum() >= min_area:
            objs.append((cat, m))
    return img, objs


def make_coco_shapes(out_dir,
                     num_train=32,
                     num_val=8,
                     img_size=128,
                     max_objects=3,
                     seed=0,
                     min_area=40):
    """Write a COCO-format instance-segmentation dataset of coloured shapes.

    Args:
        out_dir (str): root; gets ``train/``, ``val/`` and ``annotations/``.
        num_train, num_val (int): images per split. Defaults: 32, 8.
        img_size (int | tuple): image side, or (H, W). Default: 128.
        max_objects (int): objects per image, 1..max_objects. Default: 3.
        seed (int): everything drawn follows from it. Default: 0.
        min_area (int): visible pixels an (occluded) object needs to be kept. Default: 40.

    Returns:
        dict: split -> path of its annotation json.
    """
    hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(SHAPES)]
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    paths, ann_id = {}, 1
    for split, num in (('train', num_train), ('val', num_val)):
        os.makedirs(osp.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for i in range(num):
            img, objs = _coco_image(hw, rng, max_objects, min_area)
            name = f'{i:06d}.png'
            cv2.imwrite(osp.join(out_dir, split, name), img[..., ::-1])  # RGB -> BGR
            images.append(dict(id=i + 1, file_name=name, height=hw[0], width=hw[1]))
            for cat, m in objs:
                rle = mask_utils.encode(np.asfortranarray(m))
                annotations.append(
                    dict(
                        id=ann_id,
                        image_id=i + 1,
                        category_id=cat,
                        iscrowd=0,
                        area=float(mask_utils.area(rle)),
                        bbox=[float(v) for v in mask_utils.toBbox(rle)],
                        segmentation=dict(size=rle['size'], counts=rle['counts'].decode('ascii'))))
                ann_id += 1
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path, 'w') as f:
            json.dump(
                dict(
                    images=images,
                    annotations=annotations,
                    categories=categories,
                    info=dict(description='mmcondattn synthetic shapes', seed=seed)), f)
        paths[split] = path
    return paths


def make_imagenet_folder(out_dir,
                         num_train_per_class=16,
                         num_val_per_class=4,
                         img_size=64,
                         seed=0,
                         size_range=(1 / 6, 1 / 3)):
    """Write an ImageNet-style folder dataset: one class per shape, one object per image
    whose size is a fraction in ``size_range`` of the image side.

    Layout: ``{out_dir}/{train,val}/{class}/{i}.png`` and ``meta/{split}.txt`` lines
    ``{class}/{i}.png {label}`` (the ImageNet ann_file format). Returns ``out_dir``.
    """
    rng = np.random.default_rng(seed)
    hw = (img_size, img_size)
    os.makedirs(osp.join(out_dir, 'meta'), exist_ok=True)
    for split, num in (('train', num_train_per_class), ('val', num_val_per_class)):
        lines = []
        for label, kind in enumerate(SHAPES):
            os.makedirs(osp.join(out_dir, split, kind), exist_ok=True)
            for i in range(num):
                img = _background(hw, rng)
                img[_draw(kind, hw, rng,
                          size_range).astype(bool)] = _COLOURS[rng.integers(len(_COLOURS))]
                rel = f'{kind}/{i:05d}.png'
                cv2.imwrite(osp.join(out_dir, split, rel), img[..., ::-1])
                lines.append(f'{rel} {label}')
        with open(osp.join(out_dir, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(lines) + '\n')
    return out_dir
