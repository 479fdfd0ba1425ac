"""The four gradients (ebmlib.comparison) against the public primitives they are made of, with non-default
``clip``, ``eps``, ``tol``, feedback and ``nudged_steps``; defaults, validation messages in full and the table's
``ff_distance`` (the cases mutation testing found unchecked)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_raises_exactly, random_batch, random_net

import ebmlib as eb

f64 = torch.float64


def _sigmoid():
    """A logistic-sigmoid network (clip_by_default False) whose clipped fixed point has pinned units."""
    net = random_net([3, 4, 3], "sigmoid", seed=1, gain=2.0, bias_std=0.5)
    x, d, _ = random_batch(net, B=3, seed=2)
    return net, x, d


def _hard():
    """A hard-sigmoid network (clip_by_default True) whose unclipped dynamics converge."""
    net = random_net([3, 4, 3], "hard_sigmoid", seed=2, gain=0.5, bias_std=0.1, bias_mean=0.1)
    x, d, _ = random_batch(net, B=3, seed=5)
    return net, x, d


def _by_hand(net, x, d, *, beta, arrival_beta, eps, nudged_steps, feedback, tol, max_steps, clip):
    """The signals of the module text from the public primitives, every option passed explicitly."""
    mask = "pinned" if clip else None
    kw = dict(eps=eps, tol=tol, max_steps=max_steps, clip=clip, feedback=feedback)
    h = eb.relax(net, x, **kw).h
    N = net.N
    chain = eb.chain_gradient(net, h, d, mask=mask, feedback=feedback, clip=clip)
    u = eb.implicit_gradient(net, h, d, feedback=feedback, mask=mask, clip=clip)
    nudged = eb.run(net, h, steps=N + 1, eps=eps, beta=arrival_beta, target=d, clip=clip, feedback=feedback).h
    free = eb.run(net, h, steps=N + 1, eps=eps, clip=clip, feedback=feedback).h
    arrival = [None] + [-(nudged[k][N - k + 1] - free[k][N - k + 1]) / (arrival_beta * eps ** (N - k + 1))
                        for k in range(1, N + 1)]
    if nudged_steps is None:
        h_beta = eb.relax(net, x, h, beta=beta, target=d, **kw).h
    else:
        h_beta = eb.run(net, h, steps=nudged_steps, eps=eps, beta=beta, target=d, clip=clip,
                        feedback=feedback).at(nudged_steps)
    ep = [None] + [-(h_beta[k] - h[k]) / beta for k in range(1, N + 1)]
    if clip:
        h_ff = eb.mlp_forward(net, x)
    else:
        h_ff = eb.feedforward(net, x, eps=eps, tol=tol, max_steps=max_steps, clip=False).h
    return dict(h_star=h, chain=chain, implicit=[None] + [-v for v in u[1:]], arrival=arrival, h_beta=h_beta,
                ep=ep, h_ff=h_ff)


def _check(fg, want, N, *, exact=("h_star", "chain", "implicit", "h_beta", "ep", "h_ff"), arrival_tol=1e-12):
    for name in exact:
        got = getattr(fg, name)
        for k in range(1, N + 1):
            assert torch.equal(got[k], want[name][k]), (name, k)
    for k in range(1, N + 1):
        assert torch.allclose(fg.arrival[k], want["arrival"][k], rtol=arrival_tol, atol=0), k


def test_clip_on_a_sigmoid_network_gives_the_clipped_signals_with_feedback_and_nudged_steps():
    net, x, d = _sigmoid()
    opts = dict(beta=0.3, arrival_beta=1e-3, eps=0.7, nudged_steps=3, tol=1e-11, max_steps=3000, clip=True)
    fb = eb.gamma_feedback(net, 0.5)
    fg = eb.four_gradients(net, x, d, gamma=0.5, **opts)
    want = _by_hand(net, x, d, feedback=fb, **opts)
    assert any(bool(p.any()) for p in eb.pinned_units(net, want["h_star"], clip=True, feedback=fb)[1:])
    _check(fg, want, net.N, arrival_tol=1e-6)
    assert fg.gamma == 0.5
    # the clipped state differs from the unclipped one (the sigmoid does not clip by default)
    free = eb.relax(net, x, eps=0.7, tol=1e-11, feedback=fb).h
    assert not torch.allclose(fg.h_star[1], free[1], atol=1e-6)


def test_no_clip_on_a_hard_sigmoid_network_gives_the_unclipped_signals():
    net, x, d = _hard()
    opts = dict(beta=0.3, arrival_beta=1e-3, eps=0.7, nudged_steps=None, tol=1e-9, max_steps=3000, clip=False)
    fg = eb.four_gradients(net, x, d, **opts)
    want = _by_hand(net, x, d, feedback=None, **opts)
    _check(fg, want, net.N, arrival_tol=1e-6)
    # the feedforward signal is the one-way network's exact gradient at its own (unclipped) state
    none = [None, None] + [torch.zeros_like(net.W[k]) for k in range(2, net.N + 1)]
    J0 = eb.force_jacobian(net, want["h_ff"], feedback=none)
    c = eb.flatten(eb.cost_gradient(net, want["h_ff"], d))
    ff = eb.unflatten(net, -torch.linalg.solve(J0.transpose(-1, -2), c.unsqueeze(-1)).squeeze(-1))
    for k in range(1, net.N + 1):
        assert torch.equal(fg.feedforward[k], ff[k])
    # with clipping (the hard sigmoid's default) the state is another one
    clipped = eb.four_gradients(net, x, d, **{**opts, "clip": True})
    assert not all(torch.equal(a, b) for a, b in zip(clipped.h_star[1:], fg.h_star[1:]))


def test_nudged_steps_with_feedback_on_the_default_clip():
    net, x, d = _sigmoid()
    fb = eb.gamma_feedback(net, 0.5)
    fg = eb.four_gradients(net, x, d, beta=0.3, eps=0.6, nudged_steps=2, feedback=fb)
    h = eb.relax(net, x, eps=0.6, tol=1e-12, feedback=fb).h
    h_beta = eb.run(net, h, steps=2, eps=0.6, beta=0.3, target=d, feedback=fb).at(2)
    for k in range(1, net.N + 1):
        assert torch.equal(fg.h_beta[k], h_beta[k])
        assert torch.equal(fg.ep[k], -(h_beta[k] - h[k]) / 0.3)
    assert fg.gamma == 1.0  # feedback given, gamma not: no γ power to divide out


def test_defaults():
    net, x, d = _sigmoid()
    fg = eb.four_gradients(net, x, d)
    ref = eb.four_gradients(net, x, d, beta=1.0, arrival_beta=1e-6, eps=0.5, tol=1e-12, clip=False)
    for name in ("h_star", "h_beta", "ep", "arrival", "chain", "implicit", "feedforward"):
        for k in range(1, net.N + 1):
            assert torch.equal(getattr(fg, name)[k], getattr(ref, name)[k]), name
    assert fg.gamma == 1.0
    # γ = 1: the ratio is the plain norm ratio on every layer
    assert fg.ratio("chain", "implicit") == pytest.approx(
        [float(fg.chain[k].norm() / fg.implicit[k].norm()) for k in range(1, net.N + 1)], rel=1e-14)


def test_four_gradients_errors_in_full():
    net, x, d = _sigmoid()
    assert_raises_exactly(lambda: eb.four_gradients(net, x, d, arrival_beta=0.0), ValueError,
                          "arrival_beta: must be non-zero to nudge the output")
    assert_raises_exactly(lambda: eb.four_gradients(net, x, d, nudged_steps=0), ValueError,
                          "nudged_steps: must be >= 1, got 0")
    assert_raises_exactly(lambda: eb.four_gradients(net, x, d, nudged_steps=1.5), TypeError,
                          "nudged_steps: expected an integer, got float")
    assert_raises_exactly(lambda: eb.four_gradients(net, x, d, gamma=0.5, feedback=eb.gamma_feedback(net, 0.5)),
                          ValueError, "gamma, feedback: give one of them")
    # the target is checked before any relaxation (max_steps=1 would fail the free phase)
    assert_raises_exactly(lambda: eb.four_gradients(net, x, d[:1], max_steps=1), ValueError,
                          "target: expected shape (3, 3), got (1, 3)")


def test_table_ff_distance_is_the_relative_distance_of_h_star_from_the_feedforward_state():
    g = torch.Generator().manual_seed(0)
    lay = lambda s: [None] + [s * torch.randn(2, n, generator=g, dtype=f64) for n in (4, 3)]  # noqa: E731
    sig = {n: lay(1.0) for n in eb.SIGNALS}
    h_star, h_ff = lay(0.1), lay(0.1)  # norms below 1
    fg = eb.FourGradients(**sig, h_star=h_star, h_ff=h_ff, h_beta=[None, None, None])
    t = fg.table()
    want = [float((h_star[k] - h_ff[k]).norm() / h_ff[k].norm()) for k in (1, 2)]
    assert t["ff_distance"] == pytest.approx(want, rel=1e-14)
    assert all(float(h_ff[k].norm()) < 1 for k in (1, 2))
