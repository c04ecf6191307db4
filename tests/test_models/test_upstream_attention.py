"""What mmpretrain's own attention tests (``tests/test_models/test_utils/test_attention.py``)
check of the stock ``WindowMSA`` / ``ShiftWindowMSA``, run against the conditioned layers with
conditioning off and with each layer method on; plus the same for ``MultiheadAttention``'s
options. With conditioning off the conditioned layer must also equal the stock one on the
same weights. Deliberate differences are marked as such (none so far)."""
from unittest.mock import ANY, MagicMock

import pytest
import torch
from mmpretrain.models.utils.attention import MultiheadAttention, ShiftWindowMSA, WindowMSA

from mmcondattn.models.attention import ConditionedMultiheadAttention, ConditionedWindowMSA

CONDITIONING = {
    'off': None,
    'precond': dict(precond=dict()),
    'spectral': dict(spectral=dict(lam=1.0)),
    'spectral-svd': dict(spectral=dict(mode='svd')),
    'precond+spectral': dict(precond=dict(), spectral=dict(lam=1.0)),
}
cond_params = pytest.mark.parametrize('cond', list(CONDITIONING.values()), ids=list(CONDITIONING))


def relative_position_index(window_size):
    """The index of the original Swin-Transformer code (what the upstream test compares to)."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window_size[0]), torch.arange(window_size[1]),
                       indexing='ij')).flatten(1)  # 2, Wh*Ww
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += window_size[0] - 1
    rel[:, :, 1] += window_size[1] - 1
    rel[:, :, 0] *= 2 * window_size[1] - 1
    return rel.sum(-1)


def window_msa(cond, **kwargs):
    args = dict(embed_dims=96, window_size=(7, 7), num_heads=4)
    args.update(kwargs)
    return ConditionedWindowMSA(**args, conditioning=cond)


# ---------------------------------------------------------------------------- WindowMSA
@cond_params
@pytest.mark.parametrize('window', [(7, 7), (6, 7)], ids=['square', 'non-square'])
def test_window_msa_forward_shape(cond, window):
    attn = window_msa(cond, window_size=window)
    x = torch.rand(16, window[0] * window[1], 96)
    assert attn(x).shape == x.shape


def test_window_msa_off_equals_stock():
    torch.manual_seed(0)
    stock = WindowMSA(embed_dims=96, window_size=(6, 7), num_heads=4)
    stock.init_weights()
    ours = window_msa(None, window_size=(6, 7))
    ours.load_state_dict(stock.state_dict(), strict=True)
    x = torch.rand(4, 42, 96)
    mask = torch.zeros(2, 42, 42)
    mask[:, :5] = -100
    torch.testing.assert_close(ours(x, mask=mask), stock(x, mask=mask), rtol=0, atol=0)


@cond_params
def test_window_msa_relative_position_embedding(cond):
    attn = window_msa(cond, window_size=(7, 8))
    assert attn.relative_position_bias_table.shape == ((2 * 7 - 1) * (2 * 8 - 1), 4)
    assert torch.equal(attn.relative_position_index, relative_position_index((7, 8)))
    assert torch.count_nonzero(attn.relative_position_bias_table) == 0  # zeros until init
    attn.init_weights()
    assert torch.count_nonzero(attn.relative_position_bias_table) > 0


@cond_params
def test_window_msa_qkv_bias_and_qk_scale(cond):
    assert window_msa(cond, qkv_bias=True).qkv.bias.shape == (96 * 3, )
    assert window_msa(cond, qkv_bias=False).qkv.bias is None
    assert window_msa(cond).scale == pytest.approx((96 // 4)**-0.5)
    assert window_msa(cond, qk_scale=0.3).scale == 0.3


@cond_params
def test_window_msa_attn_drop_all_gives_proj_bias(cond):
    # every attention weight dropped: the heads' outputs are 0, and so are the
    # preconditioned ones (a zero row stays zero), so the output is proj's bias
    attn = window_msa(cond, attn_drop=1.0)
    torch.nn.init.normal_(attn.proj.bias)
    out = attn(torch.rand(16, 49, 96))
    torch.testing.assert_close(out, attn.proj.bias.expand_as(out))


@cond_params
def test_window_msa_proj_drop_all_gives_zero(cond):
    attn = window_msa(cond, proj_drop=1.0)
    assert torch.count_nonzero(attn(torch.rand(16, 49, 96))) == 0


@cond_params
def test_window_msa_masked_token_does_not_reach_the_others(cond):
    torch.manual_seed(0)
    attn = window_msa(cond)
    x = torch.rand(16, 49, 96)
    mask = torch.zeros(4, 49, 49)
    mask[:, 0, :] = -100
    mask[:, :, 0] = -100
    out = attn(x, mask=mask)
    x[:, 0, :].normal_()
    torch.testing.assert_close(attn(x, mask=mask)[:, 1:], out[:, 1:])


# ----------------------------------------------------------------------- ShiftWindowMSA
def shift_msa(cond, **kwargs):
    return ShiftWindowMSA(
        embed_dims=96, num_heads=4, window_msa=ConditionedWindowMSA, conditioning=cond, **kwargs)


@cond_params
def test_shift_window_msa_forward(cond):
    x = torch.rand(1, 14 * 14, 96)
    attn = shift_msa(cond, window_size=7)
    assert isinstance(attn.w_msa, ConditionedWindowMSA)
    assert attn(x, (14, 14)).shape == x.shape
    assert attn.w_msa.relative_position_bias_table.shape == ((2 * 7 - 1)**2, 4)
    assert shift_msa(cond, window_size=7, shift_size=3)(x, (14, 14)).shape == x.shape
    odd = torch.rand(1, 19 * 18, 96)  # irregular map: padded to whole windows
    assert shift_msa(cond, window_size=7)(odd, (19, 18)).shape == odd.shape
    with pytest.raises(AssertionError):  # wrong input resolution
        attn(x, (14, 15))


@cond_params
def test_shift_window_msa_pad_small_map(cond):
    attn = shift_msa(cond, window_size=7, shift_size=3, pad_small_map=True)
    attn.get_attn_mask = MagicMock(wraps=attn.get_attn_mask)
    x = torch.rand(1, 6 * 7, 96)
    assert attn(x, (6, 7)).shape == x.shape
    attn.get_attn_mask.assert_called_once_with((7, 7), window_size=7, shift_size=3, device=ANY)

    attn = shift_msa(cond, window_size=7, shift_size=3, pad_small_map=False)
    with pytest.raises(AssertionError, match=r'the window size \(7\)'):
        attn(x, (6, 7))
    attn.get_attn_mask = MagicMock(wraps=attn.get_attn_mask)
    x = torch.rand(1, 7 * 7, 96)  # the map is one window: no shift
    assert attn(x, (7, 7)).shape == x.shape
    attn.get_attn_mask.assert_called_once_with((7, 7), window_size=7, shift_size=0, device=ANY)


@cond_params
def test_shift_window_msa_drop_layer(cond):
    attn = shift_msa(cond, window_size=7, dropout_layer=dict(type='Dropout', drop_prob=1.0))
    attn.init_weights()
    assert torch.count_nonzero(attn(torch.rand(1, 14 * 14, 96), (14, 14))) == 0


# ------------------------------------------------------------------- MultiheadAttention
MHA_OPTIONS = {
    'default': dict(),
    'qk_scale': dict(qk_scale=0.3),
    'no-bias': dict(qkv_bias=False, proj_bias=False),
    'input_dims': dict(input_dims=48),
    'layer_scale': dict(use_layer_scale=True, layer_scale_init_value=0.1),
}


@pytest.mark.parametrize('options', list(MHA_OPTIONS.values()), ids=list(MHA_OPTIONS))
def test_mha_off_equals_stock(options):
    torch.manual_seed(0)
    stock = MultiheadAttention(embed_dims=96, num_heads=4, **options).eval()
    ours = ConditionedMultiheadAttention(embed_dims=96, num_heads=4, **options).eval()
    ours.load_state_dict(stock.state_dict(), strict=True)
    x = torch.rand(2, 10, options.get('input_dims', 96))
    torch.testing.assert_close(ours(x), stock(x), rtol=0, atol=0)


@cond_params
@pytest.mark.parametrize('options', list(MHA_OPTIONS.values()), ids=list(MHA_OPTIONS))
def test_mha_options_hold_with_conditioning(cond, options):
    attn = ConditionedMultiheadAttention(embed_dims=96, num_heads=4, conditioning=cond, **options)
    x = torch.rand(2, 10, options.get('input_dims', 96))
    assert attn(x).shape == (2, 10, 96)
    assert (attn.qkv.bias is None) == (options.get('qkv_bias', True) is False)
    assert (attn.proj.bias is None) == (options.get('proj_bias', True) is False)
    assert attn.qkv.in_features == options.get('input_dims', 96)


@cond_params
def test_mha_v_shortcut(cond):
    # v_shortcut (one head, as the stock layer requires) adds v, the qkv output's third
    # block, to the output; with spectral on, v is that of W + C
    attn = ConditionedMultiheadAttention(
        embed_dims=96,
        num_heads=1,
        input_dims=48,
        v_shortcut=True,
        proj_drop=1.0,
        conditioning=cond)
    attn.train()  # proj_drop=1 zeroes the projection: the output is v alone
    x = torch.rand(2, 10, 48)
    v = attn.qkv(x)[..., 2 * 96:]  # (B, N, 96)
    torch.testing.assert_close(attn(x), v)
