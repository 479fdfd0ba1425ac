"""Variants that break the assumptions: separate top-down weights, asynchronous schedules."""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb


def _fixed_point(net, x, B=None):
    r = eb.relax(net, x, feedback=B, eps=0.5, tol=1e-13, max_steps=20_000)
    assert r.converged
    return r.h


def test_symmetric_feedback_is_the_energy_model():
    net = random_net([5, 7, 6, 3], seed=1, gain=1.5)
    x, d, h = random_batch(net, B=4)
    B = eb.feedback_weights(net, 0.0, seed=3)
    for k in (2, 3):
        assert torch.allclose(B[k], net.W[k], rtol=0, atol=1e-14)
    f = net.force(h, 0.4, d, feedback=B)
    g = net.force(h, beta=0.4, target=d)
    assert max(float((f[k] - g[k]).abs().max()) for k in (1, 2, 3)) <= 1e-13
    a = eb.run(net, h, steps=6, eps=0.4, beta=0.4, target=d)
    b = eb.run(net, h, steps=6, eps=0.4, beta=0.4, target=d)
    assert max(float((a.h[k] - b.h[k]).abs().max()) for k in (1, 2, 3)) <= 1e-13


def test_feedback_weights_norm_and_asymmetry():
    net = random_net([5, 7, 6, 3], seed=1, gain=1.5)
    x, d, h = random_batch(net, B=4)
    for a in (0.3, 1.0):
        B = eb.feedback_weights(net, a, seed=3)
        for k in (2, 3):
            assert abs(float(B[k].norm() - net.W[k].norm())) <= 1e-12
    # the Jacobian of the vector field is not symmetric when B != W: no energy
    B = eb.feedback_weights(net, 0.5, seed=3)

    def field(z):
        parts = list(torch.split(z, [7, 6, 3], dim=-1))
        f = net.force([x[:1]] + [p.unsqueeze(0) for p in parts], feedback=B)
        return torch.cat(f[1:], -1).squeeze(0)

    z = torch.cat([t[:1] for t in h[1:]], -1).squeeze(0)
    J = torch.autograd.functional.jacobian(field, z)
    assert float((J - J.T).abs().max()) > 1e-3


def test_vf_force_matches_autograd_of_its_definition():
    net = random_net([4, 5, 3], seed=2, gain=1.5)
    x, d, h = random_batch(net, B=3)
    B = eb.feedback_weights(net, 0.7, seed=5)
    f = net.force(h, feedback=B)
    r = [x] + [torch.sigmoid(h[k]) for k in (1, 2)]
    f1 = r[1] * (1 - r[1]) * (net.b[1] + x @ net.W[1] + r[2] @ B[2].T) - h[1]
    assert float((f[1] - f1).abs().max()) <= 1e-14


@pytest.mark.parametrize("schedule", eb.SCHEDULES)
@pytest.mark.parametrize("a", [0.0, 0.6])
def test_first_arrival_follows_the_feedback_chain(schedule, a):
    net = random_net([6, 8, 7, 6, 4], seed=4, gain=1.5, bias_std=0.3)
    x, d, h = random_batch(net, B=5)
    B = eb.feedback_weights(net, a, seed=7)
    hs = _fixed_point(net, x, B)
    fa = eb.first_arrival(net, hs, d, eps=0.5, beta=1e-6, schedule=schedule, feedback=B)
    assert fa.steps_match()
    assert fa.worst_cos() >= 1 - 1e-6
    assert fa.worst_ratio_error() <= 1e-4
    if a == 0.0:
        assert min(c for c in fa.cos_backprop[1:]) >= 1 - 1e-6


def test_reach_steps_closed_forms():
    N = 7
    d = [None] + [N - k for k in range(1, N + 1)]
    assert eb.reach_steps(N, "synchronous")[1:] == [d[k] + 1 for k in range(1, N + 1)]
    assert eb.reach_steps(N, "bottom_up")[1:] == [d[k] + 1 for k in range(1, N + 1)]
    assert eb.reach_steps(N, "top_down")[1:] == [1] * N
    # N odd: the output is in the odd group
    assert eb.reach_steps(N, "odd_even")[1:] == [d[k] // 2 + 1 for k in range(1, N + 1)]
    assert eb.reach_steps(N, "even_odd")[1:] == [-(-d[k] // 2) + 1 for k in range(1, N + 1)]


def test_first_change_steps():
    z = torch.zeros(4, 2, 3, dtype=torch.float64)
    z[2, 1, 0] = 1e-300
    assert eb.first_change_steps([None, z, torch.zeros(4, 2, 1)]) == [None, 2, None]


def test_schedule_relax_reaches_the_same_fixed_point():
    net = random_net([5, 6, 6, 3], seed=6, gain=1.5)
    x, d, h = random_batch(net, B=4)
    ref = _fixed_point(net, x)
    for s in ("top_down", "odd_even"):
        hs = eb.relax(net, x, schedule=s, eps=0.5, tol=1e-13).h
        assert max(float((hs[k] - ref[k]).abs().max()) for k in (1, 2, 3)) <= 1e-11


def test_hard_sigmoid_clip_in_schedules():
    net = random_net([5, 6, 3], "hard_sigmoid", seed=3, gain=3.0)
    x, d, h = random_batch(net, B=3)
    tr = eb.run(net, net.init_state(x), steps=20, eps=0.5, schedule="top_down", beta=1.0, target=d)
    for k in (1, 2):
        assert float(tr.h[k].min()) >= 0.0 and float(tr.h[k].max()) <= 1.0


def test_validation_names_the_argument():
    net = random_net([5, 6, 3], seed=3)
    x, d, h = random_batch(net, B=3)
    with pytest.raises(ValueError, match="^a:"):
        eb.feedback_weights(net, 1.5, seed=0)
    with pytest.raises(TypeError, match="^seed:"):
        eb.feedback_weights(net, 0.5, seed=0.5)
    with pytest.raises(ValueError, match="^schedule:"):
        eb.schedule_groups(3, "sideways")
    with pytest.raises(ValueError, match="^schedule:"):
        eb.schedule_groups(3, [[1, 2], [2, 3]])
    with pytest.raises(ValueError, match=r"^feedback\[2\]:"):
        net.force(h, feedback=[None, None, torch.zeros(3, 3, dtype=torch.float64)])
    with pytest.raises(ValueError, match="^feedback:"):
        net.force(h, feedback=[None])
    with pytest.raises(ValueError, match="^eps:"):
        eb.step(net, h, eps=2.0)
    with pytest.raises(ValueError, match="^target:"):
        eb.step(net, h, eps=0.5, beta=1.0)
    with pytest.raises(ValueError, match="^beta:"):
        eb.first_arrival(net, h, d, eps=0.5, beta=0.0)
    with pytest.raises(ValueError, match="^h0:"):
        eb.run(net, h[:2], steps=2, eps=0.5)
