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
``--max-colors N`` stores the PNG with a palette of N colours (a file about half as large).
A wrong input (a missing or unreadable file, an image the json does not hold or of another
size, a file that is not a checkpoint) is one line on stderr, exit status 2; missing files are
told before the OpenMMLab stack is imported.
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
    p.add_argument('--score-thr', type=float, default=0.3, help='draw predictions above this score')
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


def fail(line):
    """A wrong input: one line on stderr, exit status 2."""
    print(f'error: {line}', file=sys.stderr)
    sys.exit(2)


def load_gt_boxes(ann_file, img_path):
    """The ground truth of ``img_path`` in the COCO json ``ann_file``: boxes [x1, y1, x2, y2],
    category names and the image's (width, height). The image is found by its file name."""
    name = osp.basename(img_path)
    try:
        with open(ann_file, encoding='utf-8') as f:
            coco = json.load(f)
        images, annotations = coco['images'], coco.get('annotations', [])
        categories = {c['id']: c['name'] for c in coco.get('categories', [])}
        matches = [im for im in images if osp.basename(im.get('file_name', '')) == name]
        if not matches:
            fail(f'{ann_file} holds no image named {name} ({len(images)} images)')
        image = matches[0]
        boxes, names = [], []
        for a in annotations:
            if a.get('image_id') != image['id'] or a.get('iscrowd', 0):
                continue
            x, y, w, h = map(float, a['bbox'])
            boxes.append([x, y, x + w, y + h])
            names.append(categories.get(a['category_id'], str(a['category_id'])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        fail(f'cannot read COCO json {ann_file}: {type(e).__name__}: {e}')
    return boxes, names, (image.get('width'), image.get('height'))


def _titled(visualizer, image, titles):
    """Write each title at the top-left corner of its half of ``image``."""
    import numpy as np
    visualizer.set_image(image)
    width = image.shape[1] // len(titles)
    for i, title in enumerate(titles):
        visualizer.draw_texts(
            title,
            np.array([i * width + 4, 4]),
            colors='white',
            font_sizes=11,
            bboxes=[dict(facecolor='black', alpha=0.7, pad=2, edgecolor='none')])
    return visualizer.get_image()


def draw(visualizer, image, data_sample, args):
    """Ground truth (when ``data_sample`` holds it) left, predictions right, each half titled
    with its number of boxes: an RGB array."""
    import numpy as np
    gt = data_sample.get('gt_instances')
    pred = data_sample.pred_instances
    if args.hide_labels:  # the same boxes as _draw_instances, without the text
        palette = visualizer.dataset_meta.get('palette') or [(0, 160, 0)]
        halves = []
        for inst in ([gt] if gt is not None else []) + [pred]:
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
    titles = ([f'ground truth: {len(gt)}'] if gt is not None else []) + \
        [f'predictions > {args.score_thr:g}: {len(pred)}']
    return _titled(visualizer, drawn, titles)


def main(argv=None):
    args = parse_args(argv)
    # the files first, before the stack is imported (seconds): a wrong path is told at once
    for what, path in (('config file', args.config), ('checkpoint', args.checkpoint),
                       ('image', args.img), ('annotation file', args.ann_file)):
        if path is not None and not osp.isfile(path):
            fail(f'{what} not found: {path}')
    gt = load_gt_boxes(args.ann_file, args.img) if args.ann_file else None
    try:
        from mmcondattn.errors import exits_cleanly
    except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
        fail(e)
    exits_cleanly(show)(args, gt)


def show(args, gt):
    """Run the model on ``args.img``, draw, write ``args.out_file``."""
    from mmcondattn.engine.launch import check_checkpoint, load_config
    from mmcondattn.errors import UserError
    cfg = load_config(args.config, args.cfg_options)

    import mmcv
    import torch
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import InstanceData
    from PIL import Image

    import mmcondattn.openmmlab  # noqa: F401  registers modules, applies the stack shims

    try:
        image = mmcv.imread(args.img, channel_order='rgb')
    except Exception:  # cv2's assertion on an empty decode: several lines of C++ context
        image = None
    if image is None:
        raise UserError(f'cannot read image {args.img}: not an image OpenCV can decode')
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
    if 'gt_instances' in data_sample:  # the test pipeline's LoadAnnotations: empty
        del data_sample.gt_instances
    if gt is not None:
        boxes, names, _ = gt
        labels = [classes.index(n) if n in classes else 0 for n in names]
        data_sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.tensor(labels, dtype=torch.long))

    with warnings.catch_warnings():  # mmengine warns of boxes that leave the image
        warnings.simplefilter('ignore', UserWarning)
        drawn = draw(visualizer, image, data_sample, args)

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
