"""The plain feedforward pass: each layer relaxed given only the layer below (no top-down terms)."""

import pytest
from conftest import random_batch, random_net

import ebmlib as eb


def test_hard_sigmoid_feedforward_is_the_usual_mlp():
    net = random_net([6, 8, 5, 3], "hard_sigmoid", seed=4, gain=2.0)
    x, _, _ = random_batch(net, B=16)
    ff = eb.feedforward(net, x)
    assert ff.converged
    r = x
    for k in range(1, net.N + 1):
        hk = (r @ net.W[k] + net.b[k]).clamp(0, 1)
        assert float((ff.h[k] - hk).abs().max()) <= 1e-14
        r = hk


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_each_layer_solves_its_one_way_equation(activation):
    net = random_net([6, 8, 5, 3], activation, seed=5, gain=1.5)
    x, _, _ = random_batch(net, B=16)
    ff = eb.feedforward(net, x, tol=1e-13)
    assert ff.converged and ff.residual <= 1e-13
    act = net.activation
    r = x
    for k in range(1, net.N + 1):
        a = r @ net.W[k] + net.b[k]
        assert float((ff.h[k] - act.drho(ff.h[k]) * a).abs().max()) <= 1e-12
        r = act.rho(ff.h[k])


def test_hard_sigmoid_closed_form_is_the_projected_relaxation():
    # one layer: no top-down term, so clipped relaxation must land on clip(b + W^T x)
    net = random_net([6, 5], "hard_sigmoid", seed=8, gain=3.0)
    x, _, _ = random_batch(net, B=16)
    fp = eb.relax(net, x, eps=0.5, tol=1e-13)
    assert float((fp.h[1] - eb.feedforward(net, x).h[1]).abs().max()) <= 1e-12


def test_feedforward_is_the_fixed_point_when_top_down_weights_vanish():
    # a network whose only coupling is W_1 has no top-down term: relax == feedforward
    net = random_net([6, 4, 3], "sigmoid", seed=6, gain=1.5)
    net.W[2].zero_()
    x, _, _ = random_batch(net, B=8)
    ff = eb.feedforward(net, x, tol=1e-13)
    fp = eb.relax(net, x, eps=0.5, tol=1e-13)
    for k in (1, 2):
        assert float((ff.h[k] - fp.h[k]).abs().max()) <= 1e-12


def test_distance_to_the_fixed_point_shrinks_with_the_coupling():
    net = random_net([6, 8, 5, 3], "sigmoid", seed=7, gain=2.0, bias_std=0.0)
    x, _, _ = random_batch(net, B=8)
    dist = []
    for lam in (0.1, 0.3, 1.0):
        s = net.scaled(lam)
        ff, fp = eb.feedforward(s, x, tol=1e-13), eb.relax(s, x, eps=0.5, tol=1e-13)
        dist.append(max(float((ff.h[k] - fp.h[k]).abs().max()) for k in range(1, net.N + 1)))
    assert dist[0] < dist[1] < dist[2]


def test_validation_names_the_argument():
    net = random_net([6, 4, 3])
    x, _, _ = random_batch(net)
    with pytest.raises(ValueError, match="x"):
        eb.feedforward(net, x[:, :5])
    with pytest.raises(ValueError, match="eps"):
        eb.feedforward(net, x, eps=1.5)
    with pytest.raises(ValueError, match="tol"):
        eb.feedforward(net, x, tol=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        eb.feedforward(net, x, max_steps=0)
    with pytest.raises(TypeError, match="clip"):
        eb.feedforward(net, x, clip="yes")
    with pytest.raises(ValueError, match="k"):
        eb.layer_drive(net, [x, None, None], 3)
    ff = eb.feedforward(net, x, max_steps=10, tol=1e-300)
    assert not ff.converged
