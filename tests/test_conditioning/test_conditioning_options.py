"""Parsing and validating ``conditioning=dict(...)``."""
import dataclasses

import pytest

from mmcondattn.conditioning import (ConditioningConfig, ConditioningConfigError, PrecondCfg,
                                     SpectralCfg, TokensCfg, parse_conditioning)


def test_defaults_and_subsets():
    assert parse_conditioning(None) == ConditioningConfig()
    assert not parse_conditioning(None).enabled and not parse_conditioning({}).enabled
    cfg = parse_conditioning(dict(precond=dict()))
    assert cfg.precond == PrecondCfg(eps=1e-6, scale=1.0, detach=True)
    assert cfg.spectral is None and cfg.tokens is None and cfg.enabled
    assert parse_conditioning(dict(spectral=True)).spectral == SpectralCfg(
        mode='identity', lam=10.0, targets=('q', 'k', 'v'))
    assert parse_conditioning(dict(tokens=dict())).tokens == TokensCfg(
        solver='auto', detach=True, position='before_pos_embed', ns_iters=10)
    assert parse_conditioning(dict(tokens=None, precond=False)) == ConditioningConfig()


def test_full_config_round_trips_and_is_frozen():
    raw = dict(
        precond=dict(eps=1e-5, scale=2, detach=False),
        spectral=dict(mode='svd', lam=0, targets=['v', 'q']),
        tokens=dict(solver='newton_schulz', detach=False, position='after_pos_embed', ns_iters=60))
    cfg = parse_conditioning(raw)
    assert cfg.spectral.targets == ('q', 'v')  # canonical order
    assert cfg.precond.scale == 2.0 and isinstance(cfg.precond.scale, float)
    assert parse_conditioning(cfg) == cfg and parse_conditioning(cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.precond = None


@pytest.mark.parametrize('cfg,bad,valid', [
    (dict(preconditioning=dict()), "'preconditioning'", "'precond', 'spectral', 'tokens'"),
    (dict(precond=dict(epsilon=1e-6)), "'epsilon'", "'eps', 'scale', 'detach'"),
    (dict(precond=dict(eps=-1e-6)), 'conditioning.precond.eps', '> 0'),
    (dict(precond=dict(eps=0)), 'conditioning.precond.eps', '> 0'),
    (dict(precond=dict(scale='1')), 'conditioning.precond.scale', 'number'),
    (dict(precond=dict(detach=1)), 'conditioning.precond.detach', 'True or False'),
    (dict(precond=1e-6), 'conditioning.precond', "'eps', 'scale', 'detach'"),
    (dict(spectral=dict(mode='exact')), "'exact'", "'identity', 'svd'"),
    (dict(spectral=dict(lam=-10.)), 'conditioning.spectral.lam', '>= 0'),
    (dict(spectral=dict(lam=True)), 'conditioning.spectral.lam', 'number'),
    (dict(spectral=dict(targets=('q', 'o'))), "'o'", "'q', 'k', 'v'"),
    (dict(spectral=dict(targets=())), 'conditioning.spectral.targets', "'q', 'k', 'v'"),
    (dict(spectral=dict(targets=('q', 'q'))), 'duplicate', "'q', 'k', 'v'"),
    (dict(tokens=dict(solver='eigh')), "'eigh'", "'auto', 'svd', 'gram', 'newton_schulz'"),
    (dict(tokens=dict(position='after_patch')), "'after_patch'",
     "'before_pos_embed', 'after_pos_embed'"),
    (dict(tokens=dict(ns_iters=0)), 'conditioning.tokens.ns_iters', '>= 1'),
    (dict(tokens=dict(ns_iters=2.5)), 'conditioning.tokens.ns_iters', 'integer'),
    (['precond'], 'conditioning', "'precond', 'spectral', 'tokens'"),
])
def test_bad_entries_name_the_key_and_the_valid_choices(cfg, bad, valid):
    with pytest.raises(ConditioningConfigError) as err:
        parse_conditioning(cfg)
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and '\n' not in msg
    assert bad in msg and valid in msg, msg


def test_close_misspelling_gets_a_suggestion():
    with pytest.raises(ConditioningConfigError, match="did you mean 'newton_schulz'"):
        parse_conditioning(dict(tokens=dict(solver='newton-schulz')))


def test_dataclass_built_with_bad_values_is_revalidated():
    with pytest.raises(ConditioningConfigError, match='lam'):
        parse_conditioning(ConditioningConfig(spectral=SpectralCfg(lam=-1.)))
