"""The bias of Equilibrium Propagation at finite β, and the sign of β (chapter 06).

What holds by construction lives here rather than among the chapter's claims: a fixed-sign
one-sided estimate is the exact gradient of a surrogate objective, the surrogates bracket the cost,
the cost at the nudged fixed point falls along β, and the random sign's spread is the fixed sign's
bias to first order.
"""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

EPS, TOL = 0.5, 1e-14


@pytest.fixture(scope="module")
def problem():
    net = random_net([5, 6, 4, 3], "sigmoid", seed=8, gain=2.0, bias_std=0.3)
    x, d, _ = random_batch(net, B=5, seed=9)
    h = eb.relax(net, x, eps=EPS, tol=TOL, max_steps=50_000).h
    return net, x, d, h


def _nudged(net, x, d, h, beta):
    r = eb.relax(net, x, h, eps=EPS, beta=beta, target=d, tol=TOL, max_steps=50_000)
    assert r.converged
    return r.h


def _surrogate(net, x, d, h, beta):
    """L_β = (min_h [E + βC] − min_h E) / β, batch mean; and the nudged and free minima."""
    h0 = eb.relax(net, x, h, eps=EPS, tol=TOL, max_steps=50_000).h
    hb = _nudged(net, x, d, h0, beta)
    return float((net.total_energy(hb, beta, d) - net.energy(h0)).mean()) / beta


@pytest.mark.parametrize("beta", [1.0, 0.3, -0.5])
def test_one_sided_estimate_is_the_gradient_of_the_surrogate(problem, beta):
    """Envelope theorem: (1/β)(∂E/∂θ(h^β) − ∂E/∂θ(h*)) = ∇_θ L_β exactly, at any β with a nudged minimum."""
    net, x, d, h = problem
    est = eb.ep_gradient(net, h, _nudged(net, x, d, h, beta), beta)
    step = 1e-5
    for k, (i, j) in [(1, (0, 0)), (2, (3, 1)), (3, (2, 2))]:
        plus, minus = net.clone(), net.clone()
        plus.W[k][i, j] += step
        minus.W[k][i, j] -= step
        fd = (_surrogate(plus, x, d, h, beta) - _surrogate(minus, x, d, h, beta)) / (2 * step)
        assert abs(fd - float(est[k][0][i, j])) <= 1e-8 + 1e-6 * abs(fd)
    plus, minus = net.clone(), net.clone()
    plus.b[2][1] += step
    minus.b[2][1] -= step
    fd = (_surrogate(plus, x, d, h, beta) - _surrogate(minus, x, d, h, beta)) / (2 * step)
    assert abs(fd - float(est[2][1][1])) <= 1e-8 + 1e-6 * abs(fd)


def test_surrogates_bracket_the_cost_and_the_nudged_cost_falls(problem):
    """min_h[E + βC] is concave in β, so L_β (a chord slope) falls with β: L_{+β} ≤ J ≤ L_{−β};
    and C(h^β) is non-increasing in β (its derivative is −c_βᵀH_β⁻¹c_β ≤ 0)."""
    net, x, d, h = problem
    J = float(net.cost(h, d).mean())
    betas = [-0.6, -0.3, -0.1, -0.01, 0.01, 0.1, 0.3, 1.0]
    L = [_surrogate(net, x, d, h, b) for b in betas]
    assert all(L[i] >= L[i + 1] for i in range(len(L) - 1))
    assert all(v >= J for b, v in zip(betas, L) if b < 0)
    assert all(v <= J for b, v in zip(betas, L) if b > 0)
    costs = [net.cost(_nudged(net, x, d, h, b), d) for b in betas]   # per sample
    for lo, hi in zip(costs[1:], costs[:-1]):
        assert bool((lo <= hi).all())
    # first order: L_β = J − (β/2) cᵀH⁻¹c + O(β²), C(h^β) = J − β cᵀH⁻¹c + O(β²)
    c = eb.flatten(eb.cost_gradient(net, h, d))
    cHc = float(-(c * eb.flatten(eb.implicit_gradient(net, h, d))).sum(-1).mean())
    assert abs((J - L[4]) / 0.01 - cHc / 2) <= 0.02 * cHc
    assert abs((J - float(costs[4].mean())) / 0.01 - cHc) <= 0.02 * cHc


def test_random_sign_spread_is_the_fixed_sign_bias_to_first_order(problem):
    """ĝ(±β) = g ± aβ + bβ² + …: the random sign's spread (ĝ(β) − ĝ(−β))/2 = aβ + O(β³) is the
    fixed sign's bias to first order, and its mean (ĝ(β) + ĝ(−β))/2 is off by bβ² only."""
    net, x, d, h = problem
    exact = eb.grads_flat(eb.implicit_param_gradient(net, h, d), weights_only=False)
    out = {}
    for beta in (0.02, 0.002):
        gp = eb.grads_flat(eb.ep_gradient(net, h, _nudged(net, x, d, h, beta), beta), weights_only=False)
        gm = eb.grads_flat(eb.ep_gradient(net, h, _nudged(net, x, d, h, -beta), -beta), weights_only=False)
        out[beta] = ((gp - gm) / 2, (gp + gm) / 2 - exact, gp - exact)
    spread, mean_err, fixed_err = out[0.002]
    assert abs(float(spread.norm() / fixed_err.norm()) - 1) <= 0.01        # relative gap is O(β)
    assert float(mean_err.norm() / fixed_err.norm()) <= 0.01                # O(β²) against O(β)
    assert abs(float(out[0.02][0].norm() / spread.norm()) / 10 - 1) <= 0.01  # spread ∝ β
    assert abs(float(out[0.02][1].norm() / mean_err.norm()) / 100 - 1) <= 0.01  # mean error ∝ β²


def test_negative_unit_nudge_cancels_the_output_leak():
    """At β = −1 the cost cancels ½‖y‖² in F: without a clip the nudged energy has no minimum."""
    net = random_net([4, 5, 3], "sigmoid", seed=2, gain=1.0, bias_std=0.3)
    x, d, h = random_batch(net, B=3, seed=1)
    d = d.abs() + 0.1
    y = torch.linspace(-50.0, -10.0, 5, dtype=net.dtype)
    F = []
    for v in y:
        hv = [t.clone() for t in h]
        hv[net.N] = torch.full_like(h[net.N], float(v))
        F.append(float(net.total_energy(hv, -1.0, d).sum()))
    assert all(F[i] < F[i + 1] for i in range(len(F) - 1))   # F keeps falling as y → −∞
    r = eb.relax(net, x, h, eps=EPS, beta=-1.0, target=d, tol=TOL, max_steps=3000)
    assert not r.converged
