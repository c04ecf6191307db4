"""weights_only stays on: mmengine checkpoints load through the allow-list, code payloads do not."""
import os
import pickle

import numpy as np
import pytest
import torch

from mmcondattn.compat import CheckpointError, load_checkpoint_file


class _Payload:
    """Unpickling this would run a shell command (the attack weights_only stops)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def _mmengine_like_checkpoint(path):
    """What mmengine's runner saves besides tensors: a HistoryBuffer and numpy values."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(np.float64(0.5))
    torch.save(dict(meta=dict(epoch=1, iter=4, seed=np.int64(3)),
                    state_dict=dict(w=torch.ones(2)),
                    message_hub=dict(log_scalars={'train/loss': buf},
                                     runtime_info=dict(arr=np.arange(3)))), path)


def test_plain_weights_only_load_fails_without_the_shim(tmp_path):
    """The failure the shim fixes: torch 2.13 refuses an mmengine checkpoint by default, and
    the allow-list is scoped to mmengine's loader, not leaked into every torch.load."""
    import mmcondattn  # noqa: F401
    path = tmp_path / 'epoch_1.pth'
    _mmengine_like_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path, weights_only=True)
    assert load_checkpoint_file(str(path))['meta']['iter'] == 4


def test_smuggled_statistics_method_is_refused(tmp_path):
    """getattr is allowed for HistoryBuffer's own statistics methods only."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.0)
    buf._statistics_methods = {'mean': np.ndarray.tolist}  # pickled as getattr(ndarray, ...)
    path = tmp_path / 'smuggle.pth'
    torch.save(dict(message_hub=dict(log_scalars={'loss': buf})), path)
    registry = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(CheckpointError, match=r"replaces HistoryBuffer statistics methods \['mean'\]"):
        load_checkpoint_file(str(path))
    assert HistoryBuffer._statistics_methods == registry  # undone


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    import mmcondattn  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    path = tmp_path / 'epoch_1.pth'
    _mmengine_like_checkpoint(path)
    ckpt = _load_checkpoint(str(path), map_location='cpu')  # mmengine's own entry point
    assert ckpt['meta']['iter'] == 4
    assert ckpt['message_hub']['log_scalars']['train/loss'].current() == 0.5


def test_code_payload_is_refused_with_a_clear_error(tmp_path):
    import mmcondattn  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, x=_Payload(marker)), path)
    for load in (load_checkpoint_file, _load_checkpoint):
        with pytest.raises(CheckpointError, match=r'refused to load .*evil\.pth.*system'):
            load(str(path))
    assert not marker.exists()


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='not a valid torch checkpoint'):
        load_checkpoint_file(str(bad))
