"""The interp2d shim (:func:`mmcondattn.compat.patch_interp2d`): mmpretrain 1.2 resizes Swin's
relative-position bias table with scipy's ``interp2d(kind='cubic')``, which scipy 1.14
removed; with the shim the stock resize works again, on a cubic spline that interpolates."""
import numpy as np
import pytest
import torch

from mmcondattn.compat import GridCubic, patch_interp2d


def bicubic(x, y):
    """A polynomial of degree 3 in x and in y: a cubic spline reproduces it exactly."""
    return 1 + 0.5 * x - 0.2 * y**2 + 0.03 * x**3 * y - 0.01 * x**2 * y**3


def test_grid_cubic_interpolates_and_reproduces_cubics():
    # an irregular increasing grid, like the geometric one of the table resize
    x = np.array([-7.9, -5.1, -3.0, -1.6, -0.5, 0.0, 0.6, 1.7, 3.2, 5.0, 8.1])
    y = x * 0.9
    z = bicubic(x[None, :], y[:, None])  # (ny, nx), interp2d's layout
    f = GridCubic(x, y, z)
    np.testing.assert_allclose(f(x, y), z, rtol=0, atol=1e-10)  # passes through the data
    xn, yn = np.arange(-7.0, 7.5, 1.0), np.arange(-6.0, 6.5, 1.0)
    got = f(xn, yn)
    assert got.shape == (len(yn), len(xn))
    np.testing.assert_allclose(got, bicubic(xn[None, :], yn[:, None]), rtol=0, atol=1e-9)
    with pytest.raises(NotImplementedError, match=r"replaces interp2d\(kind='cubic'\) only"):
        GridCubic(x, y, z, kind='linear')


def test_stock_swin_resizes_its_bias_table_with_the_shim():
    from mmpretrain.models.backbones import SwinTransformer
    from mmpretrain.models.utils import embed
    assert patch_interp2d()  # the pinned scipy (>= 1.14) needs it; idempotent
    arch = dict(
        arch=dict(embed_dims=32, depths=[2, 2], num_heads=[2, 4]), img_size=64, out_indices=(1, ))
    torch.manual_seed(0)
    src = SwinTransformer(**arch, window_size=4)
    src.init_weights()
    dst = SwinTransformer(**arch, window_size=8)
    res = dst.load_state_dict(src.state_dict(), strict=False)  # NotImplementedError before
    # the stock resize drops the (recomputed) index buffers of the other window size
    assert not res.unexpected_keys
    assert all(k.endswith('relative_position_index') for k in res.missing_keys)
    key = 'stages.0.blocks.0.attn.w_msa.relative_position_bias_table'
    old, new = src.state_dict()[key], dst.state_dict()[key]
    assert old.shape == (7 * 7, 2) and new.shape == (15 * 15, 2)
    # the centre of the new table (offset 0) keeps the old centre value
    torch.testing.assert_close(new.view(15, 15, 2)[7, 7], old.view(7, 7, 2)[3, 3])
    # and the call leaves scipy as it was (the replacement is scoped to the resize)
    from scipy import interpolate
    with pytest.raises(NotImplementedError):
        interpolate.interp2d([0, 1, 2, 3], [0, 1, 2, 3], np.zeros((4, 4)), kind='cubic')
    assert embed.resize_relative_position_bias_table.__wrapped_for_interp2d__
