"""A check of the OpenMMLab stack, run when ``mmcondattn.openmmlab`` is imported.

The stack breaks in three ways users hit, each of which otherwise surfaces as a deep error far
from its cause:

* mmcv installed without its compiled ops (``mmcv-lite``, or a source build without
  ``MMCV_WITH_OPS=1``): the first RoIAlign / NMS fails with ``No module named 'mmcv._ext'``
  from inside mmdet's heads, minutes into a run;
* a torchvision built for another torch: ``import torchvision`` (and so mmpretrain) fails with
  ``operator torchvision::nms does not exist``;
* an mmcv outside the range mmdet accepts: ``import mmdet`` dies on an ``AssertionError``;
* an mmcv whose compiled ops were built against another torch (pip's wheel cache reuses such a
  wheel silently): ``mmcv._ext`` fails to load with ``undefined symbol``, and the first op
  fails deep inside a head.

:func:`check_stack` finds each of these before anything else is imported and raises one
:class:`StackError` that says what is wrong and how to fix it. It only reads versions and
loads the extension module (which mmdet's models import anyway).
"""
import importlib
import importlib.metadata
import importlib.util
import json
import re
import urllib.parse

__all__ = ['StackError', 'check_stack']

# mmdet 3.3.0 (mmdet/__init__.py): mmcv_minimum_version = '2.0.0rc4', mmcv_maximum_version = '2.2.0'
MMCV_RANGE = ('2.0.0rc4', '2.2.0')
FIX = 'run tools/setup_env.sh, or see docs/installation.md'


class StackError(ImportError):
    """The installed torch / torchvision / mmcv do not work together."""


def _release(version: str):
    """(major, minor, patch) of a version string, ignoring local tags and pre-releases."""
    parts = [int(re.match(r'\d*', p).group() or 0) for p in version.split('+')[0].split('.')[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def _dist_version(name: str):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _mmcv_ext_error():
    """Why ``mmcv._ext`` cannot be loaded (first line of the error), or None if it loads."""
    try:
        import torch  # noqa: F401  the extension links against the loaded libtorch
        importlib.import_module('mmcv._ext')
    except (ImportError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def mmcv_built_for_torch():
    """The torch that the installed mmcv wheel was built against, where that was recorded
    (tools/setup_env.sh installs from ``.../mmcv-<v>_torch-<torch>_<py>/``), else None."""
    try:
        dist = importlib.metadata.distribution('mmcv')
        url = json.loads(dist.read_text('direct_url.json') or '{}').get('url', '')
        url = urllib.parse.unquote(url)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None
    m = re.search(r'_torch-([^_/]+)_', url)
    return m.group(1) if m else None


def check_stack(torch_version=None,
                torchvision_version=None,
                mmcv_version=None,
                has_mmcv_ops=None,
                mmcv_ext_error=None,
                mmcv_torch=None) -> None:
    """Raise :class:`StackError` if torch, torchvision and mmcv cannot work together.

    The arguments default to what is installed (they exist so that each failure can be shown
    without breaking an environment): ``mmcv_ext_error`` is the error loading ``mmcv._ext``
    (``''``: it loads), ``mmcv_torch`` the torch the mmcv wheel records it was built for
    (``''``: not recorded).
    """
    torch_version = torch_version or _dist_version('torch')
    torchvision_version = torchvision_version or _dist_version('torchvision')
    mmcv_version = mmcv_version or _dist_version('mmcv')
    if torch_version is None:
        raise StackError(f'torch is not installed; {FIX}')
    if torchvision_version is not None:
        t, tv = _release(torch_version), _release(torchvision_version)
        # torchvision 0.(m+15) pairs with torch 2.m (0.28 <-> 2.13, 0.15 <-> 2.0)
        if t[0] == 2 and (tv[0], tv[1]) != (0, t[1] + 15):
            raise StackError(
                f'torchvision {torchvision_version} does not match torch {torch_version} '
                f'(torch 2.{t[1]} needs torchvision 0.{t[1] + 15}.x); install the pair from the '
                f'same index, e.g. pip install torch=={t[0]}.{t[1]}.{t[2]} '
                f'torchvision==0.{t[1] + 15}.*; {FIX}')
    if mmcv_version is None:
        raise StackError(f'mmcv is not installed (mmdet needs mmcv>={MMCV_RANGE[0]},'
                         f'<{MMCV_RANGE[1]} with its compiled ops); {FIX}')
    early_rc = re.fullmatch(r'2\.0\.0rc[0-3]', mmcv_version) is not None
    if early_rc or not (2, 0, 0) <= _release(mmcv_version) < _release(MMCV_RANGE[1]):
        raise StackError(f'mmcv {mmcv_version} is installed but mmdet 3.x accepts '
                         f'mmcv>={MMCV_RANGE[0]},<{MMCV_RANGE[1]}; install mmcv==2.1.0; {FIX}')
    if has_mmcv_ops is None:
        try:
            has_mmcv_ops = importlib.util.find_spec('mmcv._ext') is not None
        except ImportError:
            has_mmcv_ops = False
    if not has_mmcv_ops:
        raise StackError(
            f'mmcv {mmcv_version} has no compiled ops (mmcv._ext is missing: mmcv-lite, or a '
            'source build without MMCV_WITH_OPS=1); Mask R-CNN needs RoIAlign and NMS. Rebuild '
            f'with MMCV_WITH_OPS=1 pip install --no-build-isolation mmcv=={mmcv_version}; {FIX}')
    if mmcv_ext_error is None:
        mmcv_ext_error = _mmcv_ext_error() or ''
    if 'undefined symbol' in mmcv_ext_error:
        mmcv_torch = mmcv_built_for_torch() if mmcv_torch is None else mmcv_torch
        built = (f'built against torch {mmcv_torch}'
                 if mmcv_torch else 'built against another torch (which one is not recorded)')
        sym = mmcv_ext_error.split('undefined symbol:')[-1].strip()
        raise StackError(
            f'mmcv {mmcv_version}\'s compiled ops were {built}, not the installed torch '
            f'{torch_version}: loading mmcv._ext fails (undefined symbol {sym}). pip\'s wheel '
            f'cache reuses a wheel built for another torch; rebuild against this one without '
            f'the cache: pip uninstall -y mmcv && MMCV_WITH_OPS=1 pip install --no-cache-dir '
            f'--no-build-isolation mmcv=={mmcv_version}; {FIX}')
    if mmcv_ext_error:
        raise StackError(f'mmcv {mmcv_version} has compiled ops that cannot be loaded '
                         f'({mmcv_ext_error}); {FIX}')
