"""What holds by construction in the first arrival, checked here instead of as claims of chapter 04.

- (a) the wavefront: with synchronous steps a push on the output reaches layer k (distance m = N − k)
  exactly at step m + 1: the nudged and free runs perform the same operations on the same numbers
  before, from *any* common start (fixed point or not, smooth or clipped, with common noise);
- the output's first change is −εβ(y(0) − d) at every β (no O(β²) term: one step of a force linear
  in β);
- the raw temporal change of one nudged trajectory at the first arrival is the paired difference
  plus the free drift h⁰_k(m+1) − h⁰_k(m), and the single-trajectory weight update of
  ``eb.first_arrival_gradient(..., paired=False)`` differs from the paired one by exactly that drift.
"""

import pytest
import torch
from conftest import hard_sigmoid_fixed_point, random_batch, random_net

import ebmlib as eb

EPS = 0.5
UNIT = 2.0**-52  # float64 machine epsilon


@pytest.fixture(scope="module")
def sigmoid_case():
    """A five-layer sigmoid network, its inputs and targets, a random (unconverged) state and h*."""
    net = random_net([6, 8, 7, 6, 5, 4], "sigmoid", seed=7, gain=2.0, bias_std=0.5)
    x, d, h = random_batch(net, B=3, seed=8)
    star = eb.relax(net, x, eps=EPS, tol=1e-14, max_steps=20_000, check_every=1)
    assert star.converged
    return net, x, d, h, star.h


def _delta(net, start, *, steps, beta, target, T=0.0, seed=None):
    """Nudged run minus free run from the same start (with the same noise when T > 0), per layer."""
    gens = [torch.Generator().manual_seed(seed) for _ in range(2)] if T > 0 else [None, None]
    nudged = eb.run(net, start, steps=steps, eps=EPS, beta=beta, target=target, T=T, generator=gens[0])
    free = eb.run(net, start, steps=steps, eps=EPS, T=T, generator=gens[1])
    return [None] + [nudged.h[k] - free.h[k] for k in range(1, net.N + 1)]


def _assert_wavefront(net, delta):
    for k in range(1, net.N + 1):
        m = net.N - k
        assert float(delta[k][: m + 1].abs().max()) == 0.0, f"layer {k} moved before step {m + 1}"
        assert float(delta[k][m + 1].abs().max()) > 0.0, f"layer {k} did not move at step {m + 1}"


@pytest.mark.parametrize("where", ["fixed point", "random state"])
@pytest.mark.parametrize("beta", [1e-6, 1.0])
def test_wavefront_is_exact_from_any_start(sigmoid_case, where, beta):
    net, x, d, h, star = sigmoid_case
    start = star if where == "fixed point" else h
    _assert_wavefront(net, _delta(net, start, steps=net.N + 2, beta=beta, target=d))


def test_wavefront_is_exact_with_common_noise(sigmoid_case):
    net, x, d, h, star = sigmoid_case
    _assert_wavefront(net, _delta(net, star, steps=net.N + 2, beta=1e-3, target=d, T=1e-4, seed=3))


def test_wavefront_of_the_clipped_hard_sigmoid_and_the_library_agree():
    net, x, d, star = hard_sigmoid_fixed_point(EPS)
    delta = _delta(net, star, steps=net.N + 2, beta=1e-6, target=d)
    fa = eb.first_arrival(net, star, d, eps=EPS, beta=1e-6, mask="pinned")
    for k in range(1, net.N + 1):
        m = net.N - k
        assert float(delta[k][: m + 1].abs().max()) == 0.0
        assert fa.silent[k] and fa.step_predicted[k] == m + 1
        # a layer moves at m + 1 unless every path to it is pinned off (then it never moves)
        assert fa.step[k] == (m + 1 if float(fa.g[k].norm()) > 0 else None)
    assert fa.steps_match() or any(float(fa.g[k].norm()) == 0 for k in range(1, net.N + 1))


def test_first_arrival_steps_match_for_the_smooth_network(sigmoid_case):
    net, x, d, h, star = sigmoid_case
    fa = eb.first_arrival(net, star, d, eps=EPS, beta=1e-6)
    assert fa.steps_match() and all(fa.silent[1:])
    assert fa.step[1:] == [net.N - k + 1 for k in range(1, net.N + 1)]


@pytest.mark.parametrize("where", ["fixed point", "random state"])
@pytest.mark.parametrize("beta", [1e-6, 1e-2, 1.0, 10.0])
def test_output_first_change_is_exactly_linear_in_beta(sigmoid_case, where, beta):
    """δ_N(1) = εβ(d − y(0)) up to the rounding of one step: no O(β²) term at any β."""
    net, x, d, h, star = sigmoid_case
    start = star if where == "fixed point" else h
    N = net.N
    delta = _delta(net, start, steps=1, beta=beta, target=d)
    exact = EPS * beta * (d - start[N])
    # each run rounds h + ε f once (and the nudged force once more): a few ulps of the largest term
    scale = max(float(start[N].abs().max()), EPS * float(net.force(start)[N].abs().max()), float(exact.abs().max()))
    assert float((delta[N][1] - exact).abs().max()) <= 8 * UNIT * scale


def test_one_trajectory_is_paired_difference_plus_free_drift(sigmoid_case):
    net, x, d, h, star = sigmoid_case
    N, beta = net.N, 1e-3
    free_phase = eb.run(net, net.init_state(x), steps=20, eps=EPS)
    start = [x] + [free_phase.h[k][20] for k in range(1, N + 1)]   # 20 steps from zero: not converged
    nudged = eb.run(net, start, steps=N + 1, eps=EPS, beta=beta, target=d)
    free = eb.run(net, start, steps=N + 1, eps=EPS)
    for k in range(1, N + 1):
        m = N - k
        assert torch.equal(nudged.h[k][m], free.h[k][m])  # the reason: layer k has not been reached at step m
        raw = nudged.h[k][m + 1] - nudged.h[k][m]
        paired = nudged.h[k][m + 1] - free.h[k][m + 1]
        drift = free.h[k][m + 1] - free.h[k][m]
        assert float(drift.norm()) > 1e-3 * float(paired.norm())  # the drift is not negligible here
        scale = float(nudged.h[k][m + 1].abs().max())
        assert float((raw - (paired + drift)).abs().max()) <= 4 * UNIT * scale


def test_single_trajectory_weight_update_differs_from_paired_by_the_drift(sigmoid_case):
    net, x, d, h, star = sigmoid_case
    N, beta = net.N, 1e-2
    free_phase = eb.run(net, net.init_state(x), steps=20, eps=EPS)
    start = [x] + [free_phase.h[k][20] for k in range(1, N + 1)]
    one = eb.first_arrival_gradient(net, start, d, eps=EPS, beta=beta, paired=False)
    two = eb.first_arrival_gradient(net, start, d, eps=EPS, beta=beta, paired=True)
    free = eb.run(net, start, steps=N + 1, eps=EPS)
    act, B = net.activation, x.shape[0]
    for k in range(1, N + 1):
        m = N - k
        g_drift = -(free.h[k][m + 1] - free.h[k][m]) / (beta * EPS ** (m + 1))
        pre = start[0] if k == 1 else act.rho(start[k - 1])
        dW = pre.T @ (act.drho(start[k]) * g_drift) / B
        assert torch.allclose(one[k][0] - two[k][0], dW, rtol=1e-6, atol=1e-12 * float(dW.abs().max()))
    # from the fixed point the drift vanishes and the two updates coincide
    one_star = eb.first_arrival_gradient(net, star, d, eps=EPS, beta=beta, paired=False)
    two_star = eb.first_arrival_gradient(net, star, d, eps=EPS, beta=beta, paired=True)
    assert eb.grads_cosine(one_star, two_star) >= 1 - 1e-9
