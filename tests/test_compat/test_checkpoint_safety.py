"""weights_only stays on: mmengine checkpoints load through the allow-list, code payloads do not.

Every test runs on both routes of :func:`mmcondattn.weights_only.weights_only_load`: torch's
scoped ``safe_globals`` (torch >= 2.5) and the allow-list unpickler (the only route on older
torch, forced here on a newer one).
"""
import io
import os
import pickle

import numpy as np
import pytest
import torch

from mmcondattn.compat import CheckpointError, load_checkpoint_file, mmengine_checkpoint_globals
from mmcondattn.weights_only import allowlist_pickle_module, has_scoped_allowlist

ROUTES = [
    pytest.param(
        True,
        id='safe_globals',
        marks=pytest.mark.skipif(
            not has_scoped_allowlist(), reason='torch < 2.5 has no safe_globals')),
    pytest.param(False, id='allowlist_unpickler')
]


class _Payload:
    """Unpickling this would run a shell command (the attack weights_only stops)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def _mmengine_like_checkpoint(path):
    """What mmengine's runner saves besides tensors: a HistoryBuffer and numpy values."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(np.float64(0.5))
    torch.save(
        dict(
            meta=dict(epoch=1, iter=4, seed=np.int64(3)),
            state_dict=dict(w=torch.ones(2)),
            message_hub=dict(log_scalars={'train/loss': buf}, runtime_info=dict(arr=np.arange(3)))),
        path)


@pytest.mark.parametrize('scoped', ROUTES)
def test_plain_weights_only_load_fails_without_the_shim(tmp_path, scoped):
    """The failure the shim fixes: torch refuses an mmengine checkpoint with weights_only, and
    the allow-list is scoped to mmengine's loader, not leaked into every torch.load."""
    import mmcondattn.openmmlab  # noqa: F401  the shims
    path = tmp_path / 'epoch_1.pth'
    _mmengine_like_checkpoint(path)
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path, weights_only=True)
    ckpt = load_checkpoint_file(str(path), scoped=scoped)
    assert ckpt['meta']['iter'] == 4 and ckpt['meta']['seed'] == 3
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['message_hub']['log_scalars']['train/loss'].current() == 0.5
    np.testing.assert_array_equal(ckpt['message_hub']['runtime_info']['arr'], np.arange(3))
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(path, weights_only=True)  # still refused after our load


@pytest.mark.parametrize('scoped', ROUTES)
def test_smuggled_statistics_method_is_refused(tmp_path, scoped):
    """getattr is allowed for HistoryBuffer's own statistics methods only."""
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(1.0)
    buf._statistics_methods = {'mean': np.ndarray.tolist}  # pickled as getattr(ndarray, ...)
    path = tmp_path / 'smuggle.pth'
    torch.save(dict(message_hub=dict(log_scalars={'loss': buf})), path)
    registry = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(
            CheckpointError, match=r"replaces HistoryBuffer statistics methods \['mean'\]"):
        load_checkpoint_file(str(path), scoped=scoped)
    assert HistoryBuffer._statistics_methods == registry  # undone


def test_mmengine_checkpoint_loads_with_weights_only(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmcondattn.openmmlab  # noqa: F401  the shims
    path = tmp_path / 'epoch_1.pth'
    _mmengine_like_checkpoint(path)
    ckpt = _load_checkpoint(str(path), map_location='cpu')  # mmengine's own entry point
    assert ckpt['meta']['iter'] == 4
    assert ckpt['message_hub']['log_scalars']['train/loss'].current() == 0.5


def test_code_payload_is_refused_with_a_clear_error(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmcondattn.openmmlab  # noqa: F401  the shims
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict={}, x=_Payload(marker)), path)
    loads = [_load_checkpoint] + [
        lambda f, s=s: load_checkpoint_file(f, scoped=s)
        for s in (False, True) if s is False or has_scoped_allowlist()
    ]
    for load in loads:
        with pytest.raises(CheckpointError, match=r'refused to load .*evil\.pth.*system'):
            load(str(path))
    assert not marker.exists()


class _CallableGetattr:
    """Pickles as ``getattr(bytes, 'fromhex')``: an allowed call that yields a callable."""

    def __call__(self, *args):
        return bytes.fromhex(*args)

    def __reduce__(self):
        return (getattr, (bytes, 'fromhex'))


class _CallsWhatGetattrReturned:

    def __reduce__(self):
        return (_CallableGetattr(), ('41', ))


def test_allowlist_unpickler_calls_only_allowed_objects():
    """getattr is allowed, but what it returns may not be called: the step from an allowed
    getattr to arbitrary code. A plain unpickler runs it; the allow-list unpickler refuses."""
    data = pickle.dumps(_CallsWhatGetattrReturned(), protocol=2)
    assert pickle.loads(data) == b'A'  # the call happens without the allow-list
    module = allowlist_pickle_module(mmengine_checkpoint_globals())
    with pytest.raises(pickle.UnpicklingError, match='Trying to call reduce for unrecognized'):
        module.load(io.BytesIO(data))


def test_allowlist_unpickler_reads_either_numpys_arrays():
    """numpy 2 pickles numpy._core.multiarray, numpy 1 numpy.core.multiarray: both load."""
    data = pickle.dumps(np.arange(3.), protocol=2)
    module = allowlist_pickle_module(mmengine_checkpoint_globals())
    for a, b in ((b'numpy._core.', b'numpy.core.'), (b'numpy.core.', b'numpy._core.')):
        other = data.replace(a, b)
        np.testing.assert_array_equal(module.load(io.BytesIO(other)), np.arange(3.))
    with pytest.raises(pickle.UnpicklingError, match='GLOBAL posix.system'):
        module.load(io.BytesIO(pickle.dumps(_Payload('/nonexistent/x'), protocol=2)))


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))
    bad = tmp_path / 'bad.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='not a valid torch checkpoint'):
        load_checkpoint_file(str(bad))


def test_checkpoint_urls_load_with_weights_only_through_mmengine(tmp_path, monkeypatch):
    """load_from / resume / init_cfg URLs: mmengine's own loader (torch.hub) unpickles with
    weights_only off on torch < 2.6; through the package they follow the allow-list too."""
    from mmengine.runner.checkpoint import _load_checkpoint

    import mmcondattn.openmmlab  # noqa: F401  the shims
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    cache = tmp_path / 'torch' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    _mmengine_like_checkpoint(cache / 'good.pth')  # as if downloaded before
    ckpt = _load_checkpoint('https://download.example.org/good.pth', map_location='cpu')
    assert ckpt['meta']['iter'] == 4
    marker = tmp_path / 'pwned'
    torch.save(dict(x=_Payload(marker)), cache / 'evil.pth')
    with pytest.raises(CheckpointError, match=r'refused to load .*evil\.pth.*system'):
        _load_checkpoint('https://download.example.org/evil.pth')
    assert not marker.exists()
    with pytest.raises(
            CheckpointError,
            match=r'cannot download the checkpoint '
            r'http://127\.0\.0\.1:9/none\.pth \(.*\); download it where'):
        _load_checkpoint('http://127.0.0.1:9/none.pth')


@pytest.mark.parametrize('scoped', ROUTES)
def test_what_newer_torch_allows_loads_on_every_route(tmp_path, scoped):
    """A MultiStepLR's milestones (Counter), devices, sets, bytearrays, complex numbers: what
    torch 2.13's weights_only allows by default loads on the allow-list route of torch 2.1."""
    from collections import Counter
    value = dict(
        milestones=Counter([8, 11]),
        device=torch.device('cpu'),
        ids={1, 2},
        raw=bytearray(b'x'),
        z=1j)
    torch.save(value, tmp_path / 'sched.pth')
    assert load_checkpoint_file(str(tmp_path / 'sched.pth'), scoped=scoped) == value
