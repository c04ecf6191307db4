"""Reading what a run logged: mmengine's ``LocalVisBackend`` writes one JSON object per line
to ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (validation metrics with ``step`` = epoch,
training and :class:`~mmcondattn.engine.ConditionMonitorHook` scalars with ``step`` =
iteration). The one reader of these files."""
import glob
import json
import os.path as osp
from typing import Callable, Dict, Iterator, List, Optional

__all__ = ['scalars_files', 'scalars_records', 'read_scalars']


def scalars_files(work_dir: str) -> List[str]:
    """The ``scalars.json`` of every run (timestamped folder) in ``work_dir``, oldest first."""
    return sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))


def scalars_records(work_dir: str) -> Iterator[dict]:
    """Every logged record (a dict with ``step``) of ``work_dir``'s runs, in order."""
    for path in scalars_files(work_dir):
        with open(path) as f:
            for line in f:
                yield json.loads(line)


def read_scalars(work_dir: str,
                 select: Optional[Callable[[str], bool]] = None) -> Dict[str, Dict[int, float]]:
    """``{key: {step: value}}`` of every scalar (``select(key)`` true, if given) logged in
    ``work_dir``'s runs; where two runs (a resumed one) log a key at the same step, the later
    run wins."""
    series: Dict[str, Dict[int, float]] = {}
    for rec in scalars_records(work_dir):
        for key, val in rec.items():
            if key != 'step' and (select is None or select(key)):
                series.setdefault(key, {})[rec['step']] = val
    return series
