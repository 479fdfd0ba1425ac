"""Pinned units under top-down feedback, the masked chain and implicit gradients (feedback, an explicit
``clip``), the implicit parameter gradient, the single-trajectory first arrival with an explicit ``clip`` and
the unpaired plasticity estimators: what mutation testing found unchecked. Expected values come from the
public primitives and from linear solves written out per sample; error messages are matched in full."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_exactly, random_batch, random_net

import ebmlib as eb
from ebmlib.estimators import _plasticity

f64 = torch.float64
TIGHT = dict(atol=1e-12, rtol=1e-10)

NET = random_net([3, 5, 4, 2], "hard_sigmoid", seed=4, gain=2.0)
X, D, _ = random_batch(NET, B=4, seed=1)
FB = eb.feedback_weights(NET, 1.0, seed=3)  # random top-down weights of W's norms


def _clamped_state():
    """A state in [0, 1] with many units on a bound (not a fixed point)."""
    g = torch.Generator().manual_seed(7)
    return [X] + [(0.5 + 0.8 * torch.randn(4, n, generator=g, dtype=f64)).clamp(0, 1) for n in NET.sizes[1:]]


H = _clamped_state()


def _sigmoid_clipped():
    """A logistic-sigmoid network (no clip by default) at its clipped fixed point, which has pinned units."""
    net = random_net([3, 4, 3], "sigmoid", seed=1, gain=2.0, bias_std=0.5)
    x, d, _ = random_batch(net, B=3, seed=2)
    h = eb.relax(net, x, eps=0.5, tol=1e-13, clip=True).h
    assert any(bool(p.any()) for p in eb.pinned_units(net, h, clip=True)[1:])
    return net, x, d, h


def _pinned_by_hand(net, h, feedback):
    f = net.force(h, feedback=feedback)
    lo, hi = net.activation.lo, net.activation.hi
    return [None] + [((h[k] <= lo) & (f[k] < 0)) | ((h[k] >= hi) & (f[k] > 0)) for k in range(1, net.N + 1)]


def _solve_on_free_units(A, c, pinned):
    """u with A_FF u_F = c_F per sample on the free units F, and u = 0 on the pinned ones."""
    u = torch.zeros_like(c)
    for b in range(c.shape[0]):
        F = (~pinned[b]).nonzero().squeeze(-1)
        u[b, F] = torch.linalg.solve(A[b][F][:, F], c[b, F])
    return u


# ---------------------------------------------------------------- pinned units and the chain under feedback
def test_pinned_units_use_the_force_of_the_feedback():
    want = _pinned_by_hand(NET, H, FB)
    got = eb.pinned_units(NET, H, feedback=FB)
    assert all(torch.equal(a, b) for a, b in zip(got[1:], want[1:]))
    # the symmetric force pins another set here
    assert not all(torch.equal(a, b) for a, b in zip(eb.pinned_units(NET, H)[1:], want[1:]))


def test_masked_chain_gradient_under_feedback():
    keep = [None] + [~p for p in _pinned_by_hand(NET, H, FB)[1:]]
    act, N = NET.activation, NET.N
    g = [None] * (N + 1)
    for k in range(N, 0, -1):
        gk = H[N] - D if k == N else act.drho(H[k]) * ((act.drho(H[k + 1]) * g[k + 1]) @ FB[k + 1].T)
        g[k] = gk * keep[k]
    got = eb.chain_gradient(NET, H, D, mask="pinned", feedback=FB)
    for k in range(1, N + 1):
        assert torch.allclose(got[k], g[k], **TIGHT)
    other = eb.chain_gradient(NET, H, D, mask="pinned")  # the symmetric force's pinned set: another result
    assert not all(torch.allclose(a, b, **TIGHT) for a, b in zip(other[1:], g[1:]))


# ---------------------------------------------------------------- implicit gradient
def test_implicit_gradient_errors_in_full():
    h, d = H, D
    assert_raises_exactly(lambda: eb.implicit_gradient(NET, h[:2], d), ValueError,
                          "h_star: expected a list [x, h_1, ..., h_N] of length 4")
    assert_raises_exactly(lambda: eb.implicit_gradient(NET, h, d, mask="all"), ValueError,
                          "mask: expected None or 'pinned', got 'all'")
    # the target is checked before the mask
    assert_raises_exactly(lambda: eb.implicit_gradient(NET, h, d[:1], mask="all"), ValueError,
                          "target: expected shape (4, 2), got (1, 2)")


def test_masked_implicit_gradient_under_feedback_solves_on_the_free_units():
    pinned = eb.flatten(_pinned_by_hand(NET, H, FB))
    assert bool(pinned.any()) and not bool(pinned.all())
    J = eb.force_jacobian(NET, H, feedback=FB)
    c = eb.flatten(eb.cost_gradient(NET, H, D))
    want = _solve_on_free_units(J, c, pinned)
    got = eb.flatten(eb.implicit_gradient(NET, H, D, feedback=FB, mask="pinned"))
    assert torch.allclose(got, want, **TIGHT)
    assert torch.equal(got[pinned], torch.zeros_like(got[pinned]))


def test_masked_implicit_gradient_with_an_explicit_clip():
    net, x, d, h = _sigmoid_clipped()
    pinned = eb.flatten(eb.pinned_units(net, h, clip=True))
    c = eb.flatten(eb.cost_gradient(net, h, d))
    want = _solve_on_free_units(-eb.hessian(net, h), c, pinned)
    got = eb.flatten(eb.implicit_gradient(net, h, d, mask="pinned", clip=True))
    assert torch.allclose(got, want, **TIGHT)
    # without clipping (the sigmoid's default) no unit is pinned: the full solve
    full = eb.flatten(eb.implicit_gradient(net, h, d, mask="pinned"))
    assert torch.allclose(full, eb.flatten(eb.implicit_gradient(net, h, d)), **TIGHT)
    assert not torch.allclose(full, got, atol=1e-6)
    # the parameter gradient uses the same clipped response u
    u = eb.unflatten(net, got)
    tmp = net.clone()
    ps = tmp.parameters()
    for p in ps:
        p.requires_grad_(True)
    hs = [h[0]] + [t.detach().clone().requires_grad_(True) for t in h[1:]]
    dEdh = torch.autograd.grad(tmp.energy(hs).sum(), hs[1:], create_graph=True)
    s = sum((gk * uk).sum() for gk, uk in zip(dEdh, u[1:])) / h[0].shape[0]
    ref = torch.autograd.grad(s, ps)
    grads = eb.implicit_param_gradient(net, h, d, mask="pinned", clip=True)
    for k in range(1, net.N + 1):
        assert torch.allclose(grads[k][0], ref[2 * (k - 1)], **TIGHT)
        assert torch.allclose(grads[k][1], ref[2 * (k - 1) + 1], **TIGHT)
    unclipped = eb.implicit_param_gradient(net, h, d, mask="pinned")
    assert not torch.allclose(unclipped[1][0], grads[1][0], atol=1e-6)


# ---------------------------------------------------------------- first arrival, single trajectory
def test_first_arrival_paired_must_be_a_bool():
    assert_raises_exactly(lambda: eb.first_arrival_gradient(NET, H, D, eps=0.5, beta=0.1, paired="yes"),
                          TypeError, "paired: expected bool, got str")


def test_unpaired_first_arrival_with_an_explicit_clip():
    net, x, d, h0 = _sigmoid_clipped()
    eps, beta, N, B = 0.5, 1e-2, net.N, x.shape[0]
    h = eb.run(net, h0, steps=N + 1, eps=eps, beta=beta, target=d, clip=True).h
    act = net.activation
    got = eb.first_arrival_gradient(net, h0, d, eps=eps, beta=beta, clip=True, paired=False)
    for k in range(1, N + 1):
        m = N - k
        e = act.drho(h0[k]) * (-(h[k][m + 1] - h[k][m]) / (beta * eps ** (m + 1)))
        r_prev = x if k == 1 else act.rho(h0[k - 1])
        assert torch.allclose(got[k][0], r_prev.T @ e / B, **TIGHT)
        assert torch.allclose(got[k][1], e.mean(0), **TIGHT)
    unclipped = eb.first_arrival_gradient(net, h0, d, eps=eps, beta=beta, paired=False)
    assert not all(torch.allclose(a[0], b[0], atol=1e-6) for a, b in zip(unclipped[1:], got[1:]))


# ---------------------------------------------------------------- plasticity, single trajectory
@pytest.mark.parametrize("rule", ["bengio", "xie_seung"])
def test_unpaired_plasticity_reads_the_nudged_trajectory_alone(rule):
    net = random_net([4, 5, 3], "sigmoid", seed=12)
    x, d, _ = random_batch(net, B=4, seed=8)
    cfg = dict(eps=0.3, free_steps=3, nudged_steps=3, beta=0.4, random_sign=False)
    out = _plasticity(rule)(net, x, d, None, eb.Phases(paired=False, **cfg), None)
    free = eb.relax(net, x, eps=0.3, tol=0.0, max_steps=3, check_every=3).h  # far from converged
    nudged = eb.run(net, free, steps=3, eps=0.3, beta=0.4, target=d)
    ref = eb.plasticity_gradient(net, nudged, 0.4, rule)
    for (gw, gb), (rw, rb) in zip(out.grads[1:], ref[1:]):
        assert torch.allclose(gw, rw, **TIGHT) and torch.allclose(gb, rb, **TIGHT)
    paired = _plasticity(rule)(net, x, d, None, eb.Phases(paired=True, **cfg), None)
    assert not torch.allclose(paired.grads[1][0], out.grads[1][0], atol=1e-6)
