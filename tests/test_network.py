"""The energy, its closed-form force, and the network object."""

import numpy as np
import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb


@pytest.mark.parametrize("activation", sorted(eb.ACTIVATIONS))
@pytest.mark.parametrize("sizes", [[4, 3], [5, 6, 2], [6, 5, 4, 3], [7, 6, 5, 4, 3, 2]])
def test_force_equals_minus_autograd_gradient(activation, sizes):
    net = random_net(sizes, activation, seed=len(sizes))
    x, d, h = random_batch(net, B=5, seed=3)
    for beta in (0.0, 0.8):
        closed = net.force(h, beta=beta, target=d)
        auto = eb.autograd_force(net, h, beta=beta, target=d)
        err = max(float((closed[k] - auto[k]).abs().max()) for k in range(1, net.N + 1))
        assert err <= 1e-10
        assert float(closed[0].abs().max()) == 0.0  # the input is clamped


def test_input_drive_is_hoisted_and_equal():
    net = random_net([5, 4, 3])
    x, d, h = random_batch(net)
    a = net.force(h)
    b = net.force(h, drive=net.input_drive(x))
    for k in range(1, net.N + 1):
        assert torch.equal(a[k], b[k])


def test_energy_accepts_leading_dims():
    net = random_net([3, 4, 2])
    x, d, h = random_batch(net, B=4)
    stacked = [torch.stack([t, t])for t in h]
    E = net.energy(stacked)
    assert E.shape == (2, 4)
    assert torch.allclose(E[0], net.energy(h))


def test_chain_gradient_closed_form():
    net = random_net([4, 5, 6, 3], seed=2)
    x, d, h = random_batch(net)
    g = eb.chain_gradient(net, h, d)
    act = net.activation
    assert torch.allclose(g[3], h[3] - d)
    for k in (2, 1):
        # g_k = D_k W_{k+1} D_{k+1} g_{k+1}, batch-first
        expect = act.drho(h[k]) * ((act.drho(h[k + 1]) * g[k + 1]) @ net.W[k + 1].T)
        assert torch.allclose(g[k], expect, atol=1e-14)


def test_hessian_symmetric_and_matches_hvp():
    net = random_net([4, 5, 3, 2], seed=4)
    x, d, h = random_batch(net, B=2)
    H = eb.hessian(net, h)
    assert float((H - H.transpose(1, 2)).abs().max()) <= 1e-12
    v = [None] + [torch.randn_like(t) for t in h[1:]]
    Hv = eb.hvp(net, h, v)
    assert torch.allclose((H @ eb.flatten(v).unsqueeze(-1)).squeeze(-1), eb.flatten(Hv), atol=1e-12)


def test_to_clone_scaled_and_npz_roundtrip(tmp_path):
    net = random_net([3, 4, 2], "tanh")
    n32 = net.to(dtype=torch.float32)
    assert n32.dtype == torch.float32 and net.dtype == torch.float64
    s = net.scaled(0.5)
    assert torch.allclose(s.W[1], 0.5 * net.W[1]) and torch.equal(s.b[1], net.b[1])
    p = net.save_npz(tmp_path / "net.npz", eps=np.array(0.5))
    back = eb.LayeredEBM.from_state_dict(dict(np.load(p)))
    assert back.sizes == net.sizes and back.activation.name == "tanh"
    assert all(torch.equal(back.W[k], net.W[k]) for k in (1, 2))


def test_hard_sigmoid_derivative_is_inclusive_like_autograd():
    act = eb.get_activation("hard_sigmoid")
    h = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(act.rho(h).sum(), h)
    assert torch.equal(act.drho(h.detach()), g)
