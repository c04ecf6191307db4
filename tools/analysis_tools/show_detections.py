"""Draw a detector's boxes on one image, next to the image's ground truth::

    python tools/analysis_tools/show_detections.py CONFIG CHECKPOINT --img IMG --out-file OUT.png
        [--ann-file COCO.json] [--score-thr 0.3] [--device cpu] [--line-width 2]
        [--hide-labels] [--max-colors N] [--cfg-options KEY=VALUE ...]

mmdet's ``init_detector`` + ``inference_detector`` run the model on ``--img``; mmdet's
``DetLocalVisualizer`` draws the predictions whose score is above ``--score-thr``. With
``--ann-file`` (a COCO json holding the image, found by its file name) the ground-truth
boxes are drawn too, and the PNG holds the two side by side as mmdet's visualiser stitches
them: ground truth left, predictions right (twice the image's width); each half is titled
with its number of boxes. Without it the PNG is the predictions alone.

``--hide-labels`` draws the boxes without their class / score labels (crowded images);
``--max-colors N`` stores the PNG with a palette of N colours (a file several times smaller).
A wrong input (a missing or unreadable file, an image the json does not hold) is one line on
stderr, exit status 2.
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

# mmengine imports pkg_resources, which the setuptools that mmcv's build needs flags as deprecated.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
from mmengine.config import DictAction  # noqa: E402

try:
    from mmcondattn.engine.launch import check_checkpoint, load_config
    from mmcondattn.errors import UserError, exits_cleanly
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Draw a detector\'s predictions on an image, next to its ground truth')
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument('--img', required=True, help='image file')
    p.add_argument('--out-file', required=True, help='the PNG to write')
    p.add_argument(
        '--ann-file',
        help='COCO json that holds the image: its ground-truth boxes are drawn on the left')
    p.add_argument(
        '--score-thr', type=float, default=0.3, help='draw predictions above this score')
    p.add_argument('--device', default=None, help='default: cuda:0 when available, else cpu')
    p.add_argument('--line-width', type=float, default=2, help='box line width (px)')
    p.add_argument(
        '--hide-labels', action='store_true', help='boxes only, without class / score labels')
    p.add_argument(
        '--max-colors',
        type=int,
        default=None,
        metavar='N',
        help='store the PNG with a palette of N colours (2-256; smaller file)')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value')
    args = p.parse_args(argv)
    if not 0 <= args.score_thr <= 1:
        p.error(f'--score-thr must be in [0, 1], got {args.score_thr}')
    if args.max_colors is not None and not 2 <= args.max_colors <= 256:
        p.error(f'--max-colors must be in [2, 256], got {args.max_colors}')
    if args.line_width <= 0:
        p.error(f'--line-width must be > 0, got {args.line_width}')
    return args


def load_gt_boxes(ann_file, img_path):
    """The ground truth of ``img_path`` in the COCO json ``ann_file``: boxes [x1, y1, x2, y2],
    category names and the image's (width, height). The image is found by its file name."""
    if not osp.isfile(ann_file):
        raise UserError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file, encoding='utf-8') as f:
            coco = json.load(f)
        images, annotations = coco['images'], coco.get('annotations', [])
        categories = {c['id']: c['name'] for c in coco.get('categories', [])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f'cannot read COCO json {ann_file}: {type(e).__name__}: {e}') from None
    name = osp.basename(img_path)
    matches = [im for im in images if osp.basename(im.get('file_name', '')) == name]
    if not matches:
        raise UserError(f'{ann_file} holds no image named {name} ({len(images)} images)')
    image = matches[0]
    boxes, names = [], []
    for a in annotations:
        if a.get('image_id') != image['id'] or a.get('iscrowd', 0):
            continue
        x, y, w, h = a['bbox']
        boxes.append([x, y, x + w, y + h])
        names.append(categories.get(a['category_id'], str(a['category_id'])))
    return boxes, names, (image.get('width'), image.get('height'))


def _titled(visualizer, image, titles):
    """Write each title at the top-left corner of its half of ``image``."""
    visualizer.set_image(image)
    width = image.shape[1] // len(titles)
    for i, title in enumerate(titles):
        visualizer.draw_texts(
            title, [i * width + 4, 4],
            colors='white',
            font_sizes=11,
            bboxes=[dict(facecolor='black', alpha=0.7, pad=2, edgecolor='none')])
    return visualizer.get_image()


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    for what, path in (('image', args.img), ('checkpoint', args.checkpoint)):
        if not osp.isfile(path):
            raise UserError(f'{what} not found: {path}')
    cfg = load_config(args.config, args.cfg_options)
    gt = load_gt_boxes(args.ann_file, args.img) if args.ann_file else None

    import mmcv
    import numpy as np
    import torch
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import InstanceData
    from PIL import Image

    import mmcondattn.openmmlab  # noqa: F401  registers modules, applies the stack shims

    try:
        image = mmcv.imread(args.img, channel_order='rgb')
    except Exception as e:  # cv2 / mmcv wording varies: not an image it can decode
        raise UserError(f'cannot read image {args.img}: {e}') from None
    if image is None:
        raise UserError(f'cannot read image {args.img}: not an image file')
    if gt is not None and gt[2] != (None, None) and gt[2] != (image.shape[1], image.shape[0]):
        raise UserError(f'{args.img} is {image.shape[1]} x {image.shape[0]} px but '
                        f'{args.ann_file} records {gt[2][0]} x {gt[2][1]}')
    check_checkpoint(args.checkpoint)  # one line for a file that is not a checkpoint

    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_detector(cfg, args.checkpoint, device=device)
        result = inference_detector(model, args.img)
    classes = list(model.dataset_meta.get('classes', ()))
    pred = result.pred_instances.cpu()
    pred = pred[pred.scores > args.score_thr]

    visualizer = DetLocalVisualizer(line_width=args.line_width)
    visualizer.dataset_meta = model.dataset_meta
    data_sample = result.cpu()
    data_sample.pred_instances = pred
    if gt is not None:
        boxes, names, _ = gt
        labels = [classes.index(n) if n in classes else 0 for n in names]
        data_sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long))

    if args.hide_labels:  # the same boxes as _draw_instances, without the text
        palette = model.dataset_meta.get('palette') or [(0, 160, 0)]
        halves = []
        for inst in ([data_sample.gt_instances] if gt is not None else []) + [pred]:
            visualizer.set_image(image)
            if len(inst):
                colors = [tuple(palette[int(label) % len(palette)]) for label in inst.labels]
                visualizer.draw_bboxes(
                    inst.bboxes, edge_colors=colors, alpha=0.8, line_widths=args.line_width)
            halves.append(visualizer.get_image())
        drawn = np.concatenate(halves, axis=1)
    else:
        visualizer.add_datasample(
            osp.basename(args.img),
            image,
            data_sample,
            draw_gt=gt is not None,
            draw_pred=True,
            pred_score_thr=args.score_thr)
        drawn = visualizer.get_image()
    titles = ([f'ground truth: {len(gt[0])}'] if gt is not None else []) + \
        [f'predictions > {args.score_thr:g}: {len(pred)}']
    drawn = _titled(visualizer, drawn, titles)

    out = Image.fromarray(drawn)
    if args.max_colors:
        out = out.quantize(colors=args.max_colors, method=Image.Quantize.MEDIANCUT)
    try:
        os.makedirs(osp.dirname(osp.abspath(args.out_file)), exist_ok=True)
        out.save(args.out_file, format='PNG', optimize=True)
    except (OSError, ValueError) as e:
        raise UserError(f'cannot write {args.out_file}: {e}') from None
    print(f'{args.out_file}: {drawn.shape[1]} x {drawn.shape[0]} px, '
          f'{len(pred)} predictions above {args.score_thr:g}' +
          (f', {len(gt[0])} ground-truth boxes' if gt is not None else ''))


if __name__ == '__main__':
    main()
