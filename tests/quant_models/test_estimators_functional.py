"""Unit tests of the four methods' pure maths (quant_models/estimators/functional.py).

Each test compares against an independent formula (numpy or a hand-written loop), so a wrong sign,
factor or mask in the implementation fails it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from quant_models.estimators import functional as F


# ---------------------------------------------------------------- IR-Net: EDE
@pytest.mark.parametrize("t,k", [(0.1, 10.0), (1.0, 1.0), (3.7, 1.0), (0.5, 2.0)])
def test_ede_backward_is_k_t_sech2(t: float, k: float) -> None:
    x = torch.linspace(-3, 3, 601, dtype=torch.float64, requires_grad=True)
    y = F.sign_ede(x, k, t)
    assert set(y.detach().unique().tolist()) == {-1.0, 1.0}
    upstream = torch.rand(601, dtype=torch.float64) + 0.5
    (y * upstream).sum().backward()
    xs = x.detach().numpy()
    expected = upstream.numpy() * k * t * (1.0 - np.tanh(t * xs) ** 2)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-9, atol=1e-13)


def test_ede_forward_sign_zero_is_plus_one() -> None:
    assert F.sign_ede(torch.zeros(3), 1.0, 1.0).tolist() == [1.0, 1.0, 1.0]


def test_ede_schedule_endpoints_and_shape() -> None:
    t0, k0 = F.ede_schedule(0.0)
    assert t0 == pytest.approx(0.1) and k0 == pytest.approx(10.0)
    t_mid, k_mid = F.ede_schedule(0.5)
    assert t_mid == pytest.approx(1.0) and k_mid == pytest.approx(1.0)
    t1, k1 = F.ede_schedule(1.0)
    assert t1 == pytest.approx(10.0) and k1 == 1.0
    # log-linear: equal ratios for equal progress steps
    ts = [F.ede_schedule(e / 10)[0] for e in range(11)]
    ratios = [b / a for a, b in zip(ts, ts[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx(10 ** 0.2)
    # the spec's table (E=400): epoch 300 -> t = 3.16
    assert F.ede_schedule(300 / 400)[0] == pytest.approx(10 ** 0.5)


def test_ede_early_is_near_identity_on_unit_interval() -> None:
    t, k = F.ede_schedule(0.0)
    x = torch.linspace(-1, 1, 201, requires_grad=True)
    F.sign_ede(x, k, t).sum().backward()
    assert float(x.grad.min()) >= 0.99 and float(x.grad.max()) <= 1.0 + 1e-6


def test_ede_schedule_rejects_bad_progress() -> None:
    with pytest.raises(ValueError):
        F.ede_schedule(1.5)


# ---------------------------------------------------------------- IR-Net: Libra-PB
def test_libra_pb_balances_skewed_filters_and_scales_are_powers_of_two() -> None:
    gen = torch.Generator().manual_seed(0)
    # filters with strong per-filter offsets: plain sign would be badly unbalanced
    offsets = torch.linspace(-2, 2, 64).reshape(64, 1)
    w = torch.randn(64, 576, generator=gen) + offsets
    plain_p_plus = (w >= 0).float().mean(dim=1)
    assert float((plain_p_plus - 0.5).abs().max()) > 0.4
    w_std, scale = F.libra_pb(w)
    p_plus = (w_std >= 0).float().mean(dim=1)
    assert float((p_plus - 0.5).abs().max()) < 0.06  # balanced within sampling noise of n=576
    assert torch.allclose(w_std.mean(dim=1), torch.zeros(64), atol=1e-5)
    assert torch.allclose(w_std.std(dim=1), torch.ones(64), atol=1e-4)
    exponents = torch.log2(scale)
    assert torch.equal(exponents, torch.round(exponents))
    # independent reference: numpy, unbiased std, 2^round(log2(mean|w_std|))
    wn = w.numpy().astype(np.float64)
    centred = wn - wn.mean(axis=1, keepdims=True)
    std = centred / centred.std(axis=1, ddof=1, keepdims=True)
    ref = 2.0 ** np.round(np.log2(np.abs(std).mean(axis=1)))
    np.testing.assert_array_equal(scale.numpy(), ref.astype(np.float32))


def test_libra_pb_laplace_scales_straddle_half_and_one() -> None:
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(256, 4096, generator=gen) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    _, scale = F.libra_pb(laplace)
    assert set(scale.unique().tolist()) <= {0.5, 1.0}
    _, gauss_scale = F.libra_pb(torch.randn(256, 4096, generator=gen))
    assert set(gauss_scale.unique().tolist()) == {1.0}


def test_libra_pb_gradient_has_zero_filter_mean() -> None:
    w = torch.randn(8, 50, dtype=torch.float64, requires_grad=True)
    w_std, _ = F.libra_pb(w)
    (w_std * torch.randn(8, 50, dtype=torch.float64)).sum().backward()
    assert torch.allclose(w.grad.sum(dim=1), torch.zeros(8, dtype=torch.float64), atol=1e-10)
    # and orthogonal to the standardized filter (the norm does not change to first order)
    assert torch.allclose((w.grad * w_std.detach()).sum(dim=1), torch.zeros(8, dtype=torch.float64), atol=1e-5)


def test_libra_pb_per_tensor_scale_is_one_value() -> None:
    _, scale = F.libra_pb(torch.randn(10, 64), per_channel=False)
    assert scale.shape == (10,) and len(scale.unique()) == 1


# ---------------------------------------------------------------- BinaryDuo ternary
def test_ternary_values_thresholds_and_gradient() -> None:
    y = torch.tensor([-2.0, -0.6, -0.5, -0.49, 0.0, 0.49, 0.5, 0.9, 1.0, 1.5], requires_grad=True)
    q = F.ternary_activation(y)
    assert q.tolist() == [-1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    hi, lo = F.decouple_ternary_bits(y.detach())
    assert torch.equal(q.detach(), (hi + lo) / 2)
    q.sum().backward()
    assert y.grad.tolist() == [0.0, 1, 1, 1, 1, 1, 1, 1, 1, 0.0]


def test_ternary_matches_authors_rounding_off_thresholds() -> None:
    y = torch.rand(10000) * 3 - 1.5
    y = y[((y.abs() - 0.5).abs() > 1e-4)]  # exact ties differ only by rounding direction
    unipolar = (torch.clamp(y, -1, 1) + 1) / 2
    authors = torch.round(unipolar * 2) / 2 * 2 - 1
    assert torch.equal(F.ternary_activation(y), authors)


# ---------------------------------------------------------------- RBONN
def test_bilinear_backward_hand_computed_step() -> None:
    """A hand-computed SGD step on a 2x2 weight with per-channel alpha (numbers worked by hand)."""
    w = torch.tensor([[0.03, -0.01], [-0.02, 0.05]], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([2.0, 0.5], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    lam, lr = 0.1, 0.01
    wq = F.bilinear_binarize(w, alpha, lam=lam, bin_=0.02)
    # forward: 0.02*alpha_c*sign(w)
    assert torch.allclose(wq, torch.tensor([[0.04, -0.04], [-0.01, 0.01]], dtype=torch.float64))
    (wq * upstream).sum().backward()
    # residual r = w - 0.02 alpha sign(w): [[0.03-0.04, -0.01+0.04], [-0.02+0.01, 0.05-0.01]]
    #          = [[-0.01, 0.03], [-0.01, 0.04]]
    # grad_w = alpha*G + lam*r = [[2-0.001, -4+0.003], [0.25-0.001, 1.5+0.004]]
    expected_gw = np.array([[1.999, -3.997], [0.249, 1.504]])
    np.testing.assert_allclose(w.grad.numpy(), expected_gw, atol=1e-12)
    # grad_alpha_c = sum G*w - lam * sum r*0.02*sign(w)
    # c0: (0.03 + 0.02) - 0.1*(-0.01*0.02 + 0.03*-0.02) = 0.05 - 0.1*(-0.0008) = 0.05008
    # c1: (-0.01 + 0.15) - 0.1*(-0.01*-0.02 + 0.04*0.02) = 0.14 - 0.1*(0.001) = 0.1399
    np.testing.assert_allclose(alpha.grad.numpy(), [0.05008, 0.1399], atol=1e-12)
    with torch.no_grad():
        w_next = w - lr * w.grad
        a_next = alpha - lr * alpha.grad
    np.testing.assert_allclose(w_next.numpy(), [[0.03 - 0.01999, -0.01 + 0.03997], [-0.02 - 0.00249, 0.05 - 0.01504]], atol=1e-12)
    np.testing.assert_allclose(a_next.numpy(), [2.0 - 0.0005008, 0.5 - 0.001399], atol=1e-12)


def test_bilinear_backward_equals_closed_form_autograd() -> None:
    gen = torch.Generator().manual_seed(3)
    w = (torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64) * 0.05).requires_grad_()
    alpha = (torch.rand(6, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    upstream = torch.randn(6, 3, 3, 3, generator=gen, dtype=torch.float64)
    lam = 1e-2
    (F.bilinear_binarize(w, alpha, lam=lam) * upstream).sum().backward()
    # closed form: task term of the bilinear form alpha*w (STE) + autograd of the penalty, sign held
    w2 = w.detach().clone().requires_grad_()
    a2 = alpha.detach().clone().requires_grad_()
    b = 0.02 * torch.where(w2.detach() >= 0, 1.0, -1.0).to(torch.float64)
    a_b = a2.reshape(-1, 1, 1, 1)
    task = (a_b * w2 * upstream).sum()
    penalty = 0.5 * lam * ((w2 - a_b * b) ** 2).sum()
    (task + penalty).backward()
    assert torch.allclose(w.grad, w2.grad) and torch.allclose(alpha.grad, a2.grad)


def test_density_mask_rank_selects_smallest_alphas() -> None:
    alpha = torch.tensor([0.9, 0.1, 0.5, 0.05, 2.0, 0.3, 0.7, 0.2, 1.1, 0.8])
    mask = F.density_mask(alpha, tau=0.6, mode="rank")
    assert int(mask.sum()) == 4
    assert set(torch.nonzero(mask).flatten().tolist()) == {1, 3, 5, 7}
    official = F.density_mask(alpha, tau=0.6, mode="official_code")
    # hand replication of the authors' expression: argsort indices compared with the count
    idx = np.argsort(alpha.numpy(), kind="stable")
    assert official.tolist() == [1.0 if idx[j] < 4 else 0.0 for j in range(10)]
    assert not torch.equal(mask, official)  # the known discrepancy (estimators.md §4.2)
    with pytest.raises(ValueError):
        F.density_mask(alpha, mode="bogus")


# ---------------------------------------------------------------- Hyper-BinaryNet
def test_ste_warmup_forward_backward() -> None:
    x = torch.tensor([-2.0, -0.5, -0.01, 0.0, 0.01, 0.5, 1.0, 2.0], requires_grad=True)
    y = F.ste_warmup(x, 0.5)
    assert torch.allclose(y, torch.clamp(x.detach() / 0.5, -1, 1))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1, 1, 1, 1, 1, 1, 0.0]  # gradient of hardtanh at T=1
    exact = F.ste_warmup(x.detach(), 0.0)
    assert exact.tolist() == [-1.0, -1, -1, 1, 1, 1, 1, 1]


def test_warmup_temperature_schedule_reaches_exact_sign_at_70_percent() -> None:
    total = 20
    temps = [F.warmup_temperature(e, total) for e in range(total)]
    assert temps[0] == 1.0
    assert all(a > b or b == 0.0 for a, b in zip(temps, temps[1:]))  # strictly decreasing until 0
    assert all(t == 0.0 for t in temps[14:]) and temps[13] > 0.0
    assert temps[13] == pytest.approx((1e-3) ** (13 / 14))
    x = torch.randn(1000)
    assert set(F.ste_warmup(x, temps[14]).unique().tolist()) == {-1.0, 1.0}


def test_hyper_generate_is_sum_of_latent_contributions_with_all_paths() -> None:
    gen = torch.Generator().manual_seed(5)
    d, p = 9, 9
    z = torch.randn(4, 3, d, generator=gen, dtype=torch.float64, requires_grad=True)
    m = torch.randn(p, d, generator=gen, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    w = F.hyper_generate(z, m, s)
    manual = torch.zeros(4, 3, p, dtype=torch.float64)
    for o in range(4):
        for i in range(3):
            for q in range(p):
                manual[o, i, q] = sum(s.item() * m[q, j].item() * z[o, i, j].item() for j in range(d))
    assert torch.allclose(w.detach(), manual)
    # one latent weight's gradient reaches all d embedding entries and d generator entries
    w[1, 2, 4].backward()
    assert int((z.grad[1, 2] != 0).sum()) == d and int((z.grad != 0).sum()) == d
    assert int((m.grad[4] != 0).sum()) == d
    assert torch.allclose(z.grad[1, 2], s.detach() * m.detach()[4])
