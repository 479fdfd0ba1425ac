"""Gradients (ebmlib.gradients): error messages matched in full, the cost's curvature in hvp and
hessian, BPTT against steps taken by hand, and a non-default ``clip`` (the cases mutation testing
found unchecked)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_exactly, random_batch, random_net

import ebmlib as eb

f64 = torch.float64

NET = random_net([3, 5, 2], seed=4)  # n_0 != n_1 != n_2, N = 2
X, D, H = random_batch(NET, B=4, seed=1)  # H: a state far from the fixed point, with units outside [0, 1]

LIST = "expected a list [x, h_1, ..., h_N] of length 3"
ERRORS = [
    (lambda: eb.autograd_force(NET, H, beta="x"), TypeError, "beta: expected a real number, got str"),
    (lambda: eb.cost_gradient(NET, H, D[:1]), ValueError, "target: expected shape (4, 2), got (1, 2)"),
    (lambda: eb.chain_gradient(NET, H[:2], D), ValueError, "h_star: " + LIST),
    (lambda: eb.chain_gradient(NET, H, D[:1]), ValueError, "target: expected shape (4, 2), got (1, 2)"),
    (lambda: eb.chain_gradient(NET, H, D, mask="all"), ValueError, "mask: expected None or 'pinned', got 'all'"),
    (lambda: eb.adjoint(NET, H, D, 0, 0.5), ValueError, "steps: must be >= 1, got 0"),
    (lambda: eb.adjoint(NET, H, D, 1.0, 0.5), TypeError, "steps: expected an integer, got float"),
    (lambda: eb.bptt(NET, H[:2], D, 1, 0.5), ValueError, "h_star: " + LIST),
    (lambda: eb.bptt(NET, H, D, 0, 0.5), ValueError, "steps: must be >= 1, got 0"),
    (lambda: eb.bptt_param_steps(NET, H[:2], D, steps=1, eps=0.5), ValueError, "h_star: " + LIST),
    (lambda: eb.bptt_param_steps(NET, H, D, steps=0, eps=0.5), ValueError, "steps: must be >= 1, got 0"),
    (lambda: eb.bptt_param_steps(NET, H, D[:1], steps=1, eps=0.5), ValueError,
     "target: expected shape (4, 2), got (1, 2)"),
]


@pytest.mark.parametrize("call, exc, msg", ERRORS, ids=[m for _, _, m in ERRORS])
def test_error_messages_in_full(call, exc, msg):
    assert_raises_exactly(call, exc, msg)


def test_autograd_force_defaults_to_the_free_force():
    f = eb.autograd_force(NET, H)  # beta = 0 by default: no target needed
    ref = NET.force(H)
    assert torch.equal(f[0], torch.zeros_like(H[0]))  # the clamped input, shape (B, n_0)
    for k in (1, 2):
        assert torch.allclose(f[k], ref[k], rtol=0, atol=1e-12)


def test_chain_gradient_is_one_entry_per_layer():
    g = eb.chain_gradient(NET, H, D)
    assert len(g) == NET.N + 1 and g[0] is None
    assert torch.allclose(g[2], H[2] - D, rtol=0, atol=0)


def test_cost_adds_beta_times_identity_on_the_output_block():
    beta = 0.7
    n1, n2 = NET.sizes[1], NET.sizes[2]
    dH = eb.hessian(NET, H, beta, D) - eb.hessian(NET, H)
    want = torch.zeros(4, n1 + n2, n1 + n2, dtype=f64)
    want[:, n1:, n1:] = beta * torch.eye(n2, dtype=f64)
    assert torch.allclose(dH, want, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(2)
    v = [None] + [torch.randn(4, n, generator=g, dtype=f64) for n in (n1, n2)]
    a, b = eb.hvp(NET, H, v, beta, D), eb.hvp(NET, H, v)
    assert torch.allclose(a[1] - b[1], torch.zeros(4, n1, dtype=f64), rtol=0, atol=1e-12)
    assert torch.allclose(a[2] - b[2], beta * v[2], rtol=0, atol=1e-12)


def test_bptt_first_entry_is_the_cost_gradient_at_the_last_state():
    # steps = 1 unrolls nothing: ∂C/∂h at h itself, y − d on the output and 0 below
    g = eb.bptt(NET, H, D, 1, 0.5)
    assert g[1].shape == (1, 4, 5) and g[2].shape == (1, 4, 2)
    assert torch.equal(g[1][0], torch.zeros(4, 5, dtype=f64))
    assert torch.allclose(g[2][0], H[2] - D, rtol=0, atol=1e-15)
    # steps = 2 unrolls one step: t = 0 is y_1 − d with h_1 = step(h)
    h1 = eb.step(NET, H, eps=0.5)
    assert torch.allclose(eb.bptt(NET, H, D, 2, 0.5)[2][0], h1[2] - D, rtol=0, atol=1e-15)


def test_bptt_passes_clip_to_the_step():
    # the sigmoid does not clip by default; clip=True must reach the unrolled steps
    h1 = eb.step(NET, H, eps=0.5, clip=True)
    free = eb.step(NET, H, eps=0.5)
    assert not torch.allclose(h1[2], free[2])  # the clip matters for this state
    g = eb.bptt(NET, H, D, 2, 0.5, clip=True)
    assert torch.allclose(g[2][0], h1[2] - D, rtol=0, atol=1e-15)


def _param_grad_by_hand(steps, eps, clip):
    net = NET.clone()
    params = net.parameters()
    for p in params:
        p.requires_grad_(True)
    h = [H[0]] + [t.detach() for t in H[1:]]
    for _ in range(steps):
        h = eb.step(net, h, eps=eps, clip=clip)
    return torch.autograd.grad(net.cost(h, D).mean(), params)


def test_bptt_param_steps_sum_to_the_gradient_with_clip():
    out = eb.bptt_param_steps(NET, H, D, steps=2, eps=0.5, clip=True)
    ref = _param_grad_by_hand(2, 0.5, True)
    unclipped = _param_grad_by_hand(2, 0.5, False)
    for k in (1, 2):
        dW, db = out[k]
        assert dW.shape == (2,) + tuple(NET.W[k].shape) and db.shape == (2,) + tuple(NET.b[k].shape)
        assert torch.allclose(dW.sum(0), ref[2 * (k - 1)], rtol=0, atol=1e-12)
        assert torch.allclose(db.sum(0), ref[2 * (k - 1) + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(ref[0], unclipped[0])  # the clip matters for this state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hessian_on_cuda_matches_cpu():
    Hc = eb.hessian(NET.to("cuda"), [t.cuda() for t in H], 0.7, D.cuda())
    assert Hc.device.type == "cuda" and Hc.dtype == f64
    assert torch.allclose(Hc.cpu(), eb.hessian(NET, H, 0.7, D), rtol=0, atol=1e-12)
