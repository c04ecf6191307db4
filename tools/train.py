"""Train a detector or classifier from an mmdet / mmpretrain config (mmdet's tools/train.py CLI)."""
import argparse
import os
import os.path as osp
import sys
import warnings

# mmengine imports pkg_resources, which the setuptools that mmcv's build needs flags as deprecated.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
from mmengine.config import DictAction  # noqa: E402

try:
    from mmcondattn.engine.launch import (UserError, check_data, check_work_dir, exits_cleanly,
                                          load_config, prepare_launch)
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Train a model')
    p.add_argument('config', help='train config file path')
    p.add_argument('--work-dir', help='the dir to save logs and models')
    p.add_argument('--amp', action='store_true', help='enable automatic-mixed-precision training')
    p.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR')
    p.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the latest one in work_dir')
    p.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


@exits_cleanly
def main(argv=None):
    args = parse_args(argv)
    from mmengine.runner import Runner

    import mmcondattn.openmmlab  # noqa: F401  registers modules, applies the stack shims

    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        './work_dirs',
        osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise UserError('--auto-scale-lr needs an auto_scale_lr dict in the config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    check_work_dir(cfg.work_dir, cfg.get('resume', False))
    check_data(cfg, ('train_dataloader', 'val_dataloader'))
    notes = []
    prepare_launch(cfg, args.launcher, notes, train=True)
    runner = Runner.from_cfg(cfg)
    for note in notes:
        runner.logger.info(note)
    runner.train()


if __name__ == '__main__':
    main()
