"""Evaluate a checkpoint with an mmdet / mmpretrain config (mmdet's tools/test.py CLI)."""
import argparse
import os
import os.path as osp
import sys
import warnings

# mmengine imports pkg_resources, which the setuptools that mmcv's build needs flags as deprecated.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
from mmengine.config import DictAction  # noqa: E402

try:
    from mmcondattn.engine.launch import (check_checkpoint, check_data, exits_cleanly, load_config,
                                          prepare_launch)
except ImportError as e:  # a broken stack (mmcondattn.stack.StackError): one line
    sys.exit(f'error: {e}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Test (and eval) a model')
    p.add_argument('config', help='test config file path')
    p.add_argument('checkpoint', help='checkpoint file')
    p.add_argument(
        '--work-dir', help='the directory to save the file containing evaluation metrics')
    p.add_argument(
        '--out', type=str, help='dump predictions to a pickle file for offline evaluation')
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
    check_checkpoint(args.checkpoint)
    check_data(cfg, ('test_dataloader', ))
    cfg.load_from = args.checkpoint
    notes = []
    prepare_launch(cfg, args.launcher, notes, train=False)
    runner = Runner.from_cfg(cfg)
    for note in notes:
        runner.logger.info(note)
    if args.out:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
