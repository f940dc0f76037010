"""Flow-matching math: pure functions checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from rank_sweep.train.flow import (
    add_noise,
    flow_loss,
    flow_target,
    sample_sigmas,
    shift_sigmas,
    sigma_quantiles,
    sigmas_to_timesteps,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("mode", ["uniform", "logit_normal"])
def test_sample_sigmas_in_open_interval_and_seeded(mode: str) -> None:
    s = sample_sigmas(20000, mode, _gen(3))
    assert s.shape == (20000,) and s.dtype == torch.float32
    assert bool((s > 0).all()) and bool((s < 1).all())
    assert torch.equal(s, sample_sigmas(20000, mode, _gen(3)))
    assert not torch.equal(s, sample_sigmas(20000, mode, _gen(4)))


def test_uniform_distribution_sanity() -> None:
    s = sample_sigmas(50000, "uniform", _gen(0))
    assert abs(s.mean().item() - 0.5) < 0.01
    assert abs(s.var().item() - 1 / 12) < 0.003
    assert abs((s < 0.25).float().mean().item() - 0.25) < 0.01


def test_logit_normal_distribution_sanity() -> None:
    s = sample_sigmas(50000, "logit_normal", _gen(0), logit_mean=0.5, logit_std=0.8)
    z = torch.log(s / (1 - s))
    assert abs(z.mean().item() - 0.5) < 0.02
    assert abs(z.std().item() - 0.8) < 0.02
    # mass concentrates mid-range compared with uniform
    assert (s - 0.5).abs().mean().item() < 0.25


def test_unknown_sampling_mode_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="uniform, logit_normal"):
        sample_sigmas(4, "cosine", _gen())


def test_sigma_quantiles_match_sampled_distribution() -> None:
    qs = [0.1, 0.5, 0.9]
    for mode, kw in (("uniform", {}), ("logit_normal", {"logit_mean": 0.3, "logit_std": 1.2})):
        q = sigma_quantiles(qs, mode, **kw)
        s = sample_sigmas(100000, mode, _gen(1), **kw)
        emp = torch.quantile(s, torch.tensor(qs))
        assert torch.allclose(q, emp, atol=0.01), (mode, q, emp)
    assert sigma_quantiles([0.5], "logit_normal").item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="outside"):
        sigma_quantiles([0.0, 0.5], "uniform")


def test_shift_identity_endpoints_and_monotone() -> None:
    s = torch.linspace(0, 1, 101)
    assert torch.equal(shift_sigmas(s, 1.0), s)
    for shift in (0.5, 3.0, 5.0):
        out = shift_sigmas(s, shift)
        assert out[0].item() == 0.0 and out[-1].item() == pytest.approx(1.0)
        assert bool((out[1:] >= out[:-1]).all())
    # shift > 1 moves mass towards noise: 3 * 0.5 / (1 + 2 * 0.5) = 0.75
    assert shift_sigmas(torch.tensor(0.5), 3.0).item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="> 0"):
        shift_sigmas(s, 0.0)


def test_add_noise_endpoints_and_per_sample_broadcast() -> None:
    g = _gen(5)
    x0, noise = torch.randn(3, 16, 2, 4, 4, generator=g), torch.randn(3, 16, 2, 4, 4, generator=g)
    assert torch.equal(add_noise(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(add_noise(x0, noise, torch.ones(3)), noise)
    sigma = torch.tensor([0.0, 0.5, 1.0])
    out = add_noise(x0, noise, sigma)
    assert torch.equal(out[0], x0[0]) and torch.equal(out[2], noise[2])
    assert torch.allclose(out[1], 0.5 * x0[1] + 0.5 * noise[1])
    assert torch.allclose(add_noise(x0, noise, torch.tensor(0.25)), 0.75 * x0 + 0.25 * noise)


def test_flow_target_is_velocity_of_the_path() -> None:
    g = _gen(6)
    x0, noise = torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g)
    s, h = torch.tensor([0.3, 0.6]), 1e-3
    fd = (add_noise(x0, noise, s + h) - add_noise(x0, noise, s - h)) / (2 * h)
    assert torch.allclose(fd, flow_target(x0, noise), atol=1e-3)


def test_flow_loss_is_float32_mse() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.bfloat16)
    target = torch.zeros(2, 2)
    loss = flow_loss(pred, target)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(7.5)


def test_sigmas_to_timesteps_scale() -> None:
    assert torch.equal(
        sigmas_to_timesteps(torch.tensor([0.0, 0.25, 1.0])), torch.tensor([0.0, 250.0, 1000.0])
    )
    assert math.isclose(sigmas_to_timesteps(torch.tensor(0.5)).item(), 500.0)
