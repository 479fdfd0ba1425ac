"""Xie & Seung's γ-scaled feedback and the four error signals: what holds by construction.

``eb.gamma_feedback`` (top-down weights γW), the force's Jacobian ``eb.force_jacobian``, the implicit
gradient with feedback, the MLP's back-propagation ``eb.mlp_backprop`` and the feedforward signal of
``eb.four_gradients``, each against an independent computation (autograd of a definition written here,
or finite differences of relaxed fixed points). Chapter 03 measures the γ → 0 rates; these tests fix
the objects it measures.
"""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

f64 = torch.float64
RHO = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "hard_sigmoid": lambda h: h.clamp(0.0, 1.0)}


def energy_gamma(net, h, gamma, rho):
    """E_γ = Σ_k γ^k [½‖h_k‖² − ρ(h_k)·(b_k + W_kᵀ ρ(h_{k−1}))], ρ(h_0) = x, written out here."""
    E, r_prev = 0.0, h[0]
    for k in range(1, net.N + 1):
        r = rho(h[k])
        E = E + gamma ** k * (0.5 * (h[k] * h[k]).sum(-1) - (r * (net.b[k] + r_prev @ net.W[k])).sum(-1))
        r_prev = r
    return E


def leaf(h):
    return [h[0]] + [t.detach().clone().requires_grad_(True) for t in h[1:]]


def max_diff(a, b, layers):
    return max(float((a[k] - b[k]).abs().max()) for k in layers)


def relaxed(net, x, feedback=None, h0=None, beta=0.0, target=None, tol=1e-14):
    r = eb.relax(net, x, h0, eps=0.5, beta=beta, target=target, tol=tol, max_steps=200_000, check_every=1,
                 feedback=feedback)
    assert r.converged
    return r.h


# ------------------------------------------------------------------ gamma_feedback and the energy E_γ
def test_gamma_feedback_weights_and_validation():
    net = random_net([5, 7, 6, 3], seed=1)
    B = eb.gamma_feedback(net, 0.25)
    assert len(B) == net.N + 1 and B[0] is None and B[1] is None
    for k in (2, 3):
        assert torch.equal(B[k], 0.25 * net.W[k])
    for bad in (0.0, -0.5):
        with pytest.raises(ValueError, match="gamma"):
            eb.gamma_feedback(net, bad)


@pytest.mark.parametrize("activation", sorted(RHO))
@pytest.mark.parametrize("gamma", [1.0, 0.3, 0.01])
def test_gamma_force_is_the_metric_gradient_of_its_energy(activation, gamma):
    """f_k = −γ^{−k} ∂E_γ/∂h_k: the γ-scaled dynamics descend E_γ in the metric diag(γ^{−k})."""
    net = random_net([5, 7, 6, 4], activation, seed=3, gain=1.5)
    x, d, h = random_batch(net, B=5, seed=4)
    f = net.force(h, feedback=eb.gamma_feedback(net, gamma))
    hs = leaf(h)
    grads = torch.autograd.grad(energy_gamma(net, hs, gamma, RHO[activation]).sum(), hs[1:])
    for k in range(1, net.N + 1):
        expect = -grads[k - 1] / gamma ** k
        assert float((f[k] - expect).abs().max()) <= 1e-12 * max(1.0, float(expect.abs().max()))


def test_gamma_one_is_the_book_model():
    net = random_net([5, 7, 6, 3], seed=2)
    x, d, h = random_batch(net, B=4, seed=1)
    one = eb.gamma_feedback(net, 1.0)
    assert max_diff(net.force(h, 0.4, d, feedback=one), net.force(h, 0.4, d), range(1, net.N + 1)) == 0.0
    a = eb.run(net, h, steps=5, eps=0.4, beta=0.4, target=d, feedback=one)
    b = eb.run(net, h, steps=5, eps=0.4, beta=0.4, target=d)
    assert max_diff(a.h, b.h, range(1, net.N + 1)) <= 4 * 2.0 ** -52   # the same steps, summed in another order


# ------------------------------------------------------------------ Jacobians, chain, implicit gradient
@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_force_jacobian_is_minus_the_hessian(activation):
    net = random_net([4, 5, 3, 2], activation, seed=4)
    x, d, h = random_batch(net, B=3, seed=2)
    J, H = eb.force_jacobian(net, h), eb.hessian(net, h)
    assert J.shape == H.shape
    assert float((J + H).abs().max()) <= 1e-12


def test_force_jacobian_with_gamma_is_the_metric_hessian_of_E_gamma():
    """With γ-feedback: J = −diag(γ^{−k}) ∂²E_γ/∂h² (not symmetric for γ ≠ 1)."""
    net = random_net([4, 5, 3, 2], seed=5, gain=1.5)
    x, d, h = random_batch(net, B=2, seed=3)
    gamma = 0.2
    J = eb.force_jacobian(net, h, feedback=eb.gamma_feedback(net, gamma))
    metric = torch.cat([torch.full((n,), gamma ** -k, dtype=f64) for k, n in enumerate(net.sizes[1:], start=1)])
    for i in range(2):
        def energy(z, i=i):
            parts = list(torch.split(z, net.sizes[1:]))
            return energy_gamma(net, [x[i:i + 1]] + [p.unsqueeze(0) for p in parts], gamma, torch.sigmoid).sum()

        z = torch.cat([t[i] for t in h[1:]])
        Hg = torch.autograd.functional.hessian(energy, z)
        assert float((J[i] + metric.unsqueeze(-1) * Hg).abs().max()) <= 1e-12
    assert float((J - J.transpose(-1, -2)).abs().max()) > 1e-3


def _blocks(M, sizes, k, j):
    edges = [0]
    for n in sizes:
        edges.append(edges[-1] + n)
    return M[:, edges[k - 1]:edges[k], edges[j - 1]:edges[j]]


@pytest.mark.parametrize("gamma", [None, 0.3])
def test_chain_gradient_is_the_recursion_through_the_jacobian_blocks(gamma):
    """g_N = y − d, g_k = J_{k,k+1} g_{k+1}: the block of ∂f/∂h above the diagonal (−H's block for γ = 1)."""
    net = random_net([4, 6, 5, 3], seed=2, gain=1.5)
    x, d, h = random_batch(net, B=4, seed=6)
    fb = None if gamma is None else eb.gamma_feedback(net, gamma)
    J = -eb.hessian(net, h) if gamma is None else eb.force_jacobian(net, h, feedback=fb)
    g = eb.chain_gradient(net, h, d, feedback=fb)
    rec = h[net.N] - d
    assert float((g[net.N] - rec).abs().max()) == 0.0
    for k in range(net.N - 1, 0, -1):
        rec = (_blocks(J, net.sizes[1:], k, k + 1) @ rec.unsqueeze(-1)).squeeze(-1)
        assert float((g[k] - rec).abs().max()) <= 1e-13


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_implicit_gradient_with_feedback_is_the_derivative_of_the_nudged_fixed_point(gamma):
    """u = dh*/dβ against (h^{+β} − h^{−β})/2β of relaxed fixed points: an O(β²) difference (sigmoid, float64)."""
    net = random_net([5, 6, 4, 3], seed=7, gain=1.5)
    x, d, _ = random_batch(net, B=3, seed=8)
    fb = eb.gamma_feedback(net, gamma)
    h = relaxed(net, x, fb)
    u = eb.implicit_gradient(net, h, d, feedback=fb)

    def central(beta):
        hp = relaxed(net, x, fb, h, beta, d)
        hm = relaxed(net, x, fb, h, -beta, d)
        return [None] + [(hp[k] - hm[k]) / (2 * beta) for k in range(1, net.N + 1)]

    layers = range(1, net.N + 1)
    fd1, fd2 = central(0.02), central(0.04)
    e1, e2 = max_diff(fd1, u, layers), max_diff(fd2, u, layers)
    assert e2 > 1e-6                      # the O(β²) term is there and measurable ...
    assert 3.0 <= e2 / e1 <= 5.0          # ... and it is O(β²): doubling β multiplies it by about 4
    # Richardson: (4 fd(β) − fd(2β))/3 cancels the β² term; what is left, O(β⁴), is far below e1
    extrapolated = [None] + [(4 * fd1[k] - fd2[k]) / 3 for k in layers]
    assert max_diff(extrapolated, u, layers) <= 0.01 * e1


# ------------------------------------------------------------------ back-propagation of the feedforward network
@pytest.mark.parametrize("activation", sorted(RHO))
def test_mlp_backprop_is_autograd_of_the_cost_wrt_the_preactivations(activation):
    net = random_net([6, 7, 5, 4], activation, seed=9, gain=1.5, bias_std=0.5, bias_mean=0.3)
    x, d, _ = random_batch(net, B=6, seed=10)
    rho, r, pre = RHO[activation], x, [None]
    for k in range(1, net.N + 1):
        a = r @ net.W[k] + net.b[k]
        a = a.requires_grad_(True) if k == 1 else a     # a_1 a leaf; the others keep their graph
        a.retain_grad()
        pre.append(a)
        r = rho(a)
    (0.5 * ((r - d) ** 2).sum()).backward()
    delta = eb.mlp_backprop(net, x, d)
    pre_lib = eb.mlp_layers(net, x)[0]
    for k in range(1, net.N + 1):
        assert float((pre_lib[k] - pre[k].detach()).abs().max()) <= 1e-14
        assert float((delta[k] - pre[k].grad).abs().max()) <= 1e-13
    if activation == "hard_sigmoid":
        assert any(bool((pre[k].grad == 0).any()) for k in range(1, net.N))   # saturated units carry no error


def test_mlp_backprop_state_drho_is_straight_through_for_the_hard_sigmoid():
    net = random_net([6, 7, 5, 4], "hard_sigmoid", seed=9, gain=1.5)
    x, d, _ = random_batch(net, B=6, seed=10)
    r = eb.mlp_forward(net, x)
    delta = eb.mlp_backprop(net, x, d, state_drho=True)
    expect = r[net.N] - d                  # ρ'(r) = 1 on [0, 1], bounds included
    assert float((delta[net.N] - expect).abs().max()) <= 1e-15
    for k in range(net.N - 1, 0, -1):
        expect = expect @ net.W[k + 1].T
        assert float((delta[k] - expect).abs().max()) <= 1e-13


def _bias_fd(net, cost, k, step):
    """Central differences of ``cost(net)`` in the biases of layer k, one unit at a time."""
    out = torch.empty(net.sizes[k], dtype=f64)
    for j in range(net.sizes[k]):
        plus, minus = net.clone(), net.clone()
        plus.b[k][j] += step
        minus.b[k][j] -= step
        out[j] = (cost(plus) - cost(minus)) / (2 * step)
    return out


@pytest.mark.parametrize("activation", ["sigmoid", "hard_sigmoid"])
def test_four_gradients_feedforward_signal_is_the_gradient_of_the_feedforward_cost(activation):
    """Σ_batch ρ'(h_ff,k)·ff_k (sigmoid) or Σ_batch ff_k (MLP) is ∂C/∂b_k of the feedforward network."""
    net = random_net([5, 6, 4, 3], activation, seed=11, gain=1.2, bias_std=0.5, bias_mean=0.3)
    x, d, _ = random_batch(net, B=4, seed=12)
    fg = eb.four_gradients(net, x, d, gamma=0.5, beta=0.5, tol=1e-13)
    if activation == "sigmoid":
        def cost(n):
            return float(n.cost(eb.feedforward(n, x, tol=1e-15, max_steps=200_000).h, d).sum())
        step, tol = 1e-4, 2e-9               # O(step²) and the relaxation's 1e-15 / step
    else:
        def cost(n):
            return float(0.5 * ((eb.mlp_forward(n, x)[n.N] - d) ** 2).sum())
        step, tol = 1e-7, 1e-8               # piecewise linear: only round-off / step
    for k in range(1, net.N + 1):
        slope = net.activation.drho(fg.h_ff[k]) if activation == "sigmoid" else torch.ones_like(fg.h_ff[k])
        signal = (slope * fg.feedforward[k]).sum(0)
        assert float((signal - _bias_fd(net, cost, k, step)).abs().max()) <= tol


def test_four_gradients_scales_out_gamma_and_arrival_is_the_chain():
    """FourGradients.ratio divides γ^{N−k} out; the first arrival is the chain; implicit → feedforward as γ → 0."""
    net = random_net([5, 6, 4, 3], seed=13, gain=1.2, bias_std=0.5)
    x, d, _ = random_batch(net, B=4, seed=14)
    fg = eb.four_gradients(net, x, d, gamma=0.1, beta=0.5, arrival_beta=1e-6, tol=1e-13)
    for k in range(1, net.N + 1):             # the arrival is the chain to O(β) = 1e-6, γ^{N−k} in both
        assert abs(fg.ratio("arrival", "chain")[k - 1] - 1) <= 1e-5
        assert 1 - fg.cos("arrival", "chain")[k - 1] <= 1e-10
    gaps = []
    for gamma in (1e-2, 1e-3):
        fg = eb.four_gradients(net, x, d, gamma=gamma, beta=0.5, tol=1e-13)
        gaps.append(max(abs(r - 1) for r in fg.ratio("implicit", "feedforward")))
    assert gaps[1] <= 1e-3 and 5 <= gaps[0] / gaps[1] <= 20          # O(γ): a tenth for a tenth of γ
