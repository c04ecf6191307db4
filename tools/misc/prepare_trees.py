"""Tree crowns in aerial photographs (real data) as a COCO-format detection dataset for
mmdet's stock ``CocoDataset`` (``make data-trees``)::

    python tools/misc/prepare_trees.py [OUT_DIR] [--wheel PATH] [--tile-size 400] [--overwrite]

Source: the annotated NEON aerial RGB photographs (10 cm per pixel) that the ``deepforest``
wheel (MIT licence, https://github.com/weecology/DeepForest) ships under ``deepforest/data/``,
boxes in Pascal VOC XML. ``--wheel PATH`` reads a local ``deepforest-2.1.0-py3-none-any.whl``;
without it ``pip download --no-deps deepforest==2.1.0`` fetches it into a temporary folder.
Only the standard library and Pillow are used (neither deepforest nor torch is needed).

What it makes (OUT_DIR, default data/trees; docs/trees.md):

- tiles: each photograph is cut on a grid of ``--tile-size`` (400) px squares without
  overlap, from the top-left corner; the last column / row keeps its smaller size when it is
  at least ``--min-tile-side`` (200) px, a thinner strip is left out.
- boxes: every label (``Tree``; ``Dead`` / ``Alive`` in SOAP_061) is the one class ``tree``.
  A box cut by a tile border is clipped to the tile and kept when the clipped part holds at
  least half the box's area and is at least 4 px in each side.
- splits, by place (no pixel in two splits): the large photograph
  2019_YELL_2_528000_4978000_image_crop2 gives its tile rows to ``train``, except the bottom
  ``--val-rows`` (2) rows, a band that is ``val``; OSBS_029 and SOAP_061 (one tile each) are
  ``train``; the whole second photograph 2019_YELL_2_541000_4977000_image_crop (13 km away) is
  ``test``.
- files: ``images/<photo>_x<X>_y<Y>.png`` (X, Y: the tile's corner in the photograph) and
  ``annotations/{train,val,test}.json`` (COCO: ``bbox`` [x, y, w, h], ``area``, ``iscrowd``
  0, one category ``{'id': 1, 'name': 'tree'}``); read back and checked, then one line with
  the images / boxes of each split.

A folder that already holds a dataset is left alone unless ``--overwrite``: a complete one
(read back and checked) is reported in one line, exit status 0 (so ``make data-trees`` may run
again); an incomplete one is an error. Exit status 2 with one line when the wheel cannot be
had or read (nothing is written then).
"""
import argparse
import io
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile

DEEPFOREST_VERSION = '2.1.0'
WHEEL_NAME = f'deepforest-{DEEPFOREST_VERSION}-py3-none-any.whl'
WHEEL_URL = f'https://pypi.org/project/deepforest/{DEEPFOREST_VERSION}/#files'
DATA_DIR = 'deepforest/data/'  # folder of the photographs and VOC XMLs inside the wheel
# photograph stem -> role: 'bands' (tile rows: train, bottom rows: val), 'train' or 'test'
PHOTOS = {
    '2019_YELL_2_528000_4978000_image_crop2': 'bands',
    '2019_YELL_2_541000_4977000_image_crop': 'test',
    'OSBS_029': 'train',
    'SOAP_061': 'train',
}
SPLITS = ('train', 'val', 'test')
CLASSES = ('tree', )
CATEGORY = {'id': 1, 'name': 'tree'}
MIN_KEEP = 0.5  # a clipped box is kept when it holds at least this part of its area
MIN_BOX_SIDE = 4  # ... and is at least this many pixels in each side


class TreesError(Exception):
    """The wheel cannot be had or read, or the output folder is taken: one line for the user."""


# ------------------------------------------------------------------------- the wheel
def download_wheel(dest, version=DEEPFOREST_VERSION, pip=None):
    """``pip download --no-deps deepforest==<version>`` into ``dest``; returns the wheel's path.

    Args:
        dest (str): an existing folder.
        version (str): deepforest's version. Defaults to '2.1.0'.
        pip (list[str], optional): the pip command. Defaults to ``[sys.executable, '-m', 'pip']``.

    Raises:
        TreesError: pip failed (no network, no such version) or left no wheel.
    """
    cmd = (pip or [sys.executable, '-m', 'pip']) + [
        'download', '--no-deps', '--only-binary=:all:', '--disable-pip-version-check', '-q',
        f'deepforest=={version}', '-d', dest
    ]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
        why = None if r.returncode == 0 else (lines[-1] if lines else f'exit {r.returncode}')
    except (OSError, subprocess.TimeoutExpired) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
    wheels = sorted(f for f in os.listdir(dest) if f.endswith('.whl'))
    if why is None and not wheels:
        why = 'pip left no wheel'
    if why is not None:
        raise TreesError(f'could not download deepforest=={version} with pip ({why}); download '
                         f'{WHEEL_NAME} from {WHEEL_URL} and pass it with --wheel PATH')
    return osp.join(dest, wheels[0])


def read_wheel(path, stems=tuple(PHOTOS)):
    """The PNG and VOC XML of each photograph in the wheel (a zip) at ``path``.

    Args:
        path (str): a deepforest wheel.
        stems (Sequence[str]): photograph names, without extension. Defaults to ``PHOTOS``.

    Returns:
        dict: stem -> ``(png bytes, xml bytes)``, in the order of ``stems``.

    Raises:
        TreesError: no such file, not a zip, or files missing.
    """
    if not osp.isfile(path):
        raise TreesError(f'no deepforest wheel at {path}; download {WHEEL_NAME} from '
                         f'{WHEEL_URL} and pass it with --wheel PATH')
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            want = [f'{DATA_DIR}{s}{ext}' for s in stems for ext in ('.png', '.xml')]
            missing = [n for n in want if n not in names]
            if missing:
                raise TreesError(f'{path} lacks {", ".join(missing)}: not a deepforest '
                                 f'{DEEPFOREST_VERSION} wheel? Get {WHEEL_NAME} from {WHEEL_URL}')
            return {s: (z.read(f'{DATA_DIR}{s}.png'), z.read(f'{DATA_DIR}{s}.xml')) for s in stems}
    except zipfile.BadZipFile:
        raise TreesError(f'{path} is not a wheel (not a zip file); get {WHEEL_NAME} from '
                         f'{WHEEL_URL}') from None


def parse_voc(xml):
    """A Pascal VOC annotation.

    Args:
        xml (bytes | str): the XML text.

    Returns:
        dict: ``width``, ``height`` (int) and ``boxes``: a list of
        ``(x0, y0, x1, y1, label)``, floats in pixels, x1 > x0, y1 > y0 (VOC's ``xmin`` ..
        ``xmax`` taken as the edges of the box: width = xmax - xmin, as deepforest does).

    Raises:
        TreesError: a missing size or a box without four numbers.
    """
    root = ET.fromstring(xml)
    try:
        width, height = int(root.findtext('size/width')), int(root.findtext('size/height'))
        boxes = []
        for obj in root.iter('object'):
            x0, y0, x1, y1 = (
                float(obj.findtext(f'bndbox/{k}')) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
            boxes.append((x0, y0, x1, y1, obj.findtext('name', '').strip()))
    except (TypeError, ValueError) as e:
        raise TreesError(f'a VOC annotation ({root.findtext("filename")}) is malformed: {e}')
    return dict(width=width, height=height, boxes=boxes)


# --------------------------------------------------------------------- tiles and boxes
def tile_spans(length, tile=400, min_side=200):
    """Start and size of the tiles along one side of ``length`` px.

    A grid of ``tile`` px from 0 without overlap; the last span keeps its size when it is at
    least ``min_side`` px and is left out otherwise. E.g. (2472, 400, 200) -> six spans of
    400 (the last 72 px left out); (1035, 400, 200) -> (0, 400), (400, 400), (800, 235).

    Returns:
        list[tuple[int, int]]: ``(start, size)``.
    """
    spans = [(s, min(tile, length - s)) for s in range(0, length, tile)]
    return [(s, n) for s, n in spans if n == tile or n >= min_side]


def clip_box(box, rect, min_keep=MIN_KEEP, min_side=MIN_BOX_SIDE):
    """A box clipped to a tile, in the tile's coordinates, or None when the rule drops it.

    Args:
        box (Sequence[float]): ``(x0, y0, x1, y1)`` in the photograph.
        rect (Sequence[int]): the tile ``(x, y, w, h)`` in the photograph.
        min_keep (float): kept when the clipped area is at least this part of the box's
            area. Defaults to 0.5.
        min_side (float): ... and the clipped box is at least this many px in each side.
            Defaults to 4.

    Returns:
        tuple[float, float, float, float] | None: ``(x0, y0, x1, y1)`` within
        ``[0, w] x [0, h]``.
    """
    x, y, w, h = rect
    x0, y0, x1, y1 = box[:4]
    cx0, cy0, cx1, cy1 = max(x0, x), max(y0, y), min(x1, x + w), min(y1, y + h)
    cw, ch = cx1 - cx0, cy1 - cy0
    if cw < min_side or ch < min_side or cw * ch < min_keep * (x1 - x0) * (y1 - y0):
        return None
    return (cx0 - x, cy0 - y, cx1 - x, cy1 - y)


def split_of(role, row, num_rows, val_rows=2):
    """The split of the tile in row ``row`` (of ``num_rows``) of a photograph with ``role``
    (``PHOTOS``): 'bands' gives its bottom ``val_rows`` rows to 'val', the rest to 'train'."""
    if role == 'bands':
        return 'val' if row >= num_rows - val_rows else 'train'
    return role


def tile_photo(stem, voc, tile=400, min_side=200):
    """Cut one photograph's annotation into tiles.

    Args:
        stem (str): the photograph's name.
        voc (dict): :func:`parse_voc`'s result.
        tile (int), min_side (int): as :func:`tile_spans`.

    Returns:
        tuple[list[dict], int]: the tiles, each a dict with ``photo``, ``row``, ``col``,
        ``rect`` ``(x, y, w, h)`` and ``boxes``: the kept boxes ``(x0, y0, x1, y1, label)`` in
        the tile's coordinates; and how many boxes are in no tile (cut by the clipping rule
        or in a strip left out).
    """
    tiles, placed = [], set()
    for row, (y, h) in enumerate(tile_spans(voc['height'], tile, min_side)):
        for col, (x, w) in enumerate(tile_spans(voc['width'], tile, min_side)):
            boxes = []
            for i, b in enumerate(voc['boxes']):
                c = clip_box(b, (x, y, w, h))
                if c is not None:
                    boxes.append(c + (b[4], ))
                    placed.add(i)
            tiles.append(dict(photo=stem, row=row, col=col, rect=(x, y, w, h), boxes=boxes))
    return tiles, len(voc['boxes']) - len(placed)


def coco_dict(tiles, split):
    """The COCO annotation of one split.

    Args:
        tiles (list[dict]): :func:`tile_photo` tiles of this split, each with ``file_name``.
        split (str): its name (in ``info``).

    Returns:
        dict: ``images`` (``id`` from 1, ``file_name``, ``width``, ``height``, and where it
        comes from: ``photo``, ``x0``, ``y0``), ``annotations`` (``bbox`` [x, y, w, h],
        ``area`` w * h, ``iscrowd`` 0, ``category_id`` 1, the VOC label as
        ``source_label``), ``categories`` ``[{'id': 1, 'name': 'tree'}]``.
    """
    images, anns = [], []
    for img_id, t in enumerate(tiles, 1):
        x, y, w, h = t['rect']
        images.append(
            dict(
                id=img_id,
                file_name=t['file_name'],
                width=w,
                height=h,
                photo=t['photo'],
                x0=x,
                y0=y))
        for x0, y0, x1, y1, label in t['boxes']:
            bw, bh = x1 - x0, y1 - y0
            anns.append(
                dict(
                    id=len(anns) + 1,
                    image_id=img_id,
                    category_id=CATEGORY['id'],
                    bbox=[x0, y0, bw, bh],
                    area=bw * bh,
                    iscrowd=0,
                    source_label=label))
    info = dict(
        description=f'NEON aerial RGB tree crowns, {split} split (tools/misc/prepare_trees.py)',
        url='https://github.com/weecology/DeepForest',
        version=DEEPFOREST_VERSION)
    licenses = [dict(id=1, name='MIT', url='https://opensource.org/licenses/MIT')]
    return dict(
        info=info, licenses=licenses, images=images, annotations=anns, categories=[dict(CATEGORY)])


# ---------------------------------------------------------------------- output folder
def existing_dataset(out_dir):
    """What of a dataset ``out_dir`` already holds (``images/`` or ``annotations/`` with
    files), as a list of relative paths; empty when none."""
    found = []
    for sub in ('annotations', 'images'):
        d = osp.join(out_dir, sub)
        if osp.isdir(d) and os.listdir(d):
            found.append(f'{sub}/')
    return found


def check_dataset(out_dir):
    """Read the written dataset back and check it.

    Checks: every image file exists with the size its entry gives, ids are unique, every box
    lies inside its image with sides >= ``MIN_BOX_SIDE``, ``area`` = w * h, one category
    ``tree``, and no tile of one split overlaps a tile of another.

    Returns:
        dict: split -> ``(images, boxes)``.

    Raises:
        TreesError: a check fails (names the file and what is wrong).
    """
    from PIL import Image
    counts, rects = {}, {}
    for split in SPLITS:
        path = osp.join(out_dir, 'annotations', f'{split}.json')
        d = json.load(open(path))
        where = osp.relpath(path, out_dir)
        if d['categories'] != [CATEGORY]:
            raise TreesError(f'{where}: categories {d["categories"]}, expected {[CATEGORY]}')
        sizes = {}
        for im in d['images']:
            with Image.open(osp.join(out_dir, 'images', im['file_name'])) as f:
                if f.size != (im['width'], im['height']):
                    raise TreesError(f'{where}: {im["file_name"]} is {f.size}, its entry says '
                                     f'{(im["width"], im["height"])}')
            sizes[im['id']] = (im['width'], im['height'])
            rects.setdefault(im['photo'], []).append(
                (split, im['x0'], im['y0'], im['width'], im['height']))
        if len(sizes) != len(d['images']) or not d['images']:
            raise TreesError(f'{where}: {len(d["images"])} images, ids not unique or none')
        for a in d['annotations']:
            x, y, w, h = a['bbox']
            W, H = sizes[a['image_id']]
            if not (0 <= x and 0 <= y and x + w <= W and y + h <= H and min(w, h) >= MIN_BOX_SIDE
                    and a['area'] == w * h and a['iscrowd'] == 0):
                raise TreesError(f'{where}: annotation {a["id"]} is not a valid box: {a}')
        if len({a['id'] for a in d['annotations']}) != len(d['annotations']):
            raise TreesError(f'{where}: annotation ids are not unique')
        counts[split] = (len(d['images']), len(d['annotations']))
    for photo, rs in rects.items():
        for i, (s1, x1, y1, w1, h1) in enumerate(rs):
            for s2, x2, y2, w2, h2 in rs[i + 1:]:
                if x1 < x2 + w2 and x2 < x1 + w1 and y1 < y2 + h2 and y2 < y1 + h1:
                    raise TreesError(f'{photo}: a {s1} tile at ({x1}, {y1}) overlaps a {s2} tile '
                                     f'at ({x2}, {y2})')
    return counts


def prepare_trees(photos, out_dir, tile=400, min_side=200, val_rows=2, overwrite=False):
    """Tile the photographs, split them by place and write the COCO dataset.

    Args:
        photos (dict): stem -> ``(png bytes, xml bytes)`` (:func:`read_wheel`); stems not in
            ``PHOTOS`` are refused.
        out_dir (str): the dataset folder (``images/``, ``annotations/`` are made in it).
        tile (int): tile side in px. Defaults to 400.
        min_side (int): the smallest edge tile kept (see :func:`tile_spans`). Defaults to 200.
        val_rows (int): bottom tile rows of the 'bands' photograph that are 'val'.
            Defaults to 2.
        overwrite (bool): replace the ``images/`` and ``annotations/`` of a dataset already
            there. Defaults to False (refuse).

    Returns:
        dict: ``counts`` (split -> ``(images, boxes)``, as read back by
        :func:`check_dataset`), ``dropped`` (boxes in no tile: cut by the clipping rule or in
        a strip left out), ``boxes`` (boxes in the XMLs).

    Raises:
        TreesError: the folder holds a dataset (and not ``overwrite``), an image does not match
            its annotation, or a split would be empty.
    """
    from PIL import Image
    found = existing_dataset(out_dir)
    if found and not overwrite:
        raise TreesError(f'{out_dir} already holds a dataset ({", ".join(found)}); pass '
                         '--overwrite to replace it, or give another folder')
    by_split = {s: [] for s in SPLITS}
    images, total, dropped = {}, 0, 0
    for stem, (png, xml) in photos.items():
        if stem not in PHOTOS:
            raise TreesError(f'unknown photograph {stem}; known: {", ".join(PHOTOS)}')
        voc = parse_voc(xml)
        images[stem] = Image.open(io.BytesIO(png)).convert('RGB')
        if images[stem].size != (voc['width'], voc['height']):
            raise TreesError(f'{stem}.png is {images[stem].size}, its XML says '
                             f'{(voc["width"], voc["height"])}')
        total += len(voc['boxes'])
        tiles, unplaced = tile_photo(stem, voc, tile, min_side)
        dropped += unplaced
        num_rows = max(t['row'] for t in tiles) + 1 if tiles else 0
        if PHOTOS[stem] == 'bands' and not 0 < val_rows < num_rows:
            raise TreesError(f'--val-rows {val_rows}: {stem} has {num_rows} tile rows of {tile} '
                             'px; give 1 .. rows - 1')
        for t in tiles:
            x, y = t['rect'][:2]
            t['file_name'] = f'{stem}_x{x}_y{y}.png'
            by_split[split_of(PHOTOS[stem], t['row'], num_rows, val_rows)].append(t)
    empty = [s for s in SPLITS if not by_split[s]]
    if empty:
        raise TreesError(f'no tile in {", ".join(empty)} (tile size {tile} px too large?)')

    for sub in ('images', 'annotations'):
        if overwrite:
            shutil.rmtree(osp.join(out_dir, sub), ignore_errors=True)
        os.makedirs(osp.join(out_dir, sub), exist_ok=True)
    kept = 0
    for split, tiles in by_split.items():
        for t in tiles:
            x, y, w, h = t['rect']
            images[t['photo']].crop(
                (x, y, x + w, y + h)).save(osp.join(out_dir, 'images', t['file_name']))
            kept += len(t['boxes'])
        with open(osp.join(out_dir, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(coco_dict(tiles, split), f)
    counts = check_dataset(out_dir)
    if sum(n for _, n in counts.values()) != kept:
        raise TreesError(f'{out_dir}: {kept} boxes written, {counts} read back')
    return dict(counts=counts, dropped=dropped, boxes=total)


# ---------------------------------------------------------------------------- command
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Tree crowns in NEON aerial photographs (the deepforest wheel\'s annotated '
        'examples, MIT) cut into tiles, as a COCO detection dataset with one class "tree" and '
        'spatial train / val / test splits (docs/trees.md).')
    p.add_argument(
        'out_dir', nargs='?', default='data/trees', help='dataset folder (default data/trees)')
    p.add_argument(
        '--wheel',
        help=f'a local {WHEEL_NAME}; default: pip download --no-deps '
        f'deepforest=={DEEPFOREST_VERSION} into a temporary folder')
    p.add_argument('--tile-size', type=int, default=400, help='tile side in px (default 400)')
    p.add_argument(
        '--min-tile-side',
        type=int,
        default=200,
        help='an edge tile thinner than this is left out (default 200)')
    p.add_argument(
        '--val-rows',
        type=int,
        default=2,
        help='bottom tile rows of the large YELL photograph that are val (default 2)')
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the images/ and annotations/ of a dataset already in OUT_DIR')
    return p.parse_args(argv)


def summary(counts):
    """'train 26 images / 458 boxes, val ...' for ``counts`` (split -> (images, boxes))."""
    return ', '.join(f'{s} {counts[s][0]} images / {counts[s][1]} boxes' for s in SPLITS)


def main(argv=None):
    args = parse_args(argv)
    try:
        if existing_dataset(args.out_dir) and not args.overwrite:  # before any download
            try:
                counts = check_dataset(args.out_dir)
            except (TreesError, OSError, ValueError, KeyError, TypeError) as e:
                raise TreesError(f'{args.out_dir} holds an incomplete or broken dataset ({e}); '
                                 'pass --overwrite to make it again') from None
            print(f'{args.out_dir} already holds a dataset ({summary(counts)}); left as it is '
                  '(--overwrite makes it again)')
            return 0
        if args.wheel:
            photos = read_wheel(args.wheel)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                photos = read_wheel(download_wheel(tmp))
        res = prepare_trees(photos, args.out_dir, args.tile_size, args.min_tile_side, args.val_rows,
                            args.overwrite)
    except TreesError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{args.out_dir}: {len(photos)} deepforest {DEEPFOREST_VERSION} photographs in '
          f'{args.tile_size} px tiles, class tree: {summary(res["counts"])} (of '
          f'{res["boxes"]} boxes in the XMLs, {res["dropped"]} left out by the tiling rule)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
