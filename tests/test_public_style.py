"""The benchmark's public-style baseline computes what ebmlib computes (float64), so its times compare like with like."""

from __future__ import annotations

import pytest
import torch

import ebmlib as eb
from ebmlib.book.public_style import PublicStyleEP

f64 = torch.float64


def _setup(seed: int = 0):
    net = eb.LayeredEBM([12, 9, 7, 4], "hard_sigmoid", seed=seed, dtype=f64)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 12, generator=g, dtype=f64)
    d = torch.nn.functional.one_hot(torch.randint(0, 4, (5,), generator=g), 4).to(f64)
    h0 = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=7).h
    return net, x, d, h0


@pytest.mark.parametrize("beta", [0.0, 0.8, -0.8])
def test_public_phase_equals_relax(beta):
    net, x, d, h0 = _setup()
    pub = PublicStyleEP(net, (0.1, 0.1, 0.1), eps=0.5)
    ours = eb.relax(net, x, h0, eps=0.5, beta=beta, target=d, tol=0.0, max_steps=9, check_every=9).h
    theirs = pub.phase(x, h0[1:], 9, beta, d)
    assert max(float((a - b).abs().max()) for a, b in zip(ours[1:], theirs)) < 1e-12


@pytest.mark.parametrize("method", ["ep", "ep_symmetric"])
def test_public_train_step_equals_train_step(method):
    net, x, d, h0 = _setup(1)
    lrs = (0.3, 0.2, 0.1)
    pub = PublicStyleEP(net, lrs, eps=0.5)
    ph = eb.Phases(eps=0.5, free_steps=6, nudged_steps=3, beta=0.7, random_sign=False)
    est = eb.train_step(net, eb.get_estimator(method), x, d, phases=ph, lrs=lrs, generator=torch.Generator(), h0=h0)
    free = pub.train_step(x, d, h0[1:], free_steps=6, nudged_steps=3, beta=0.7, symmetric=method == "ep_symmetric")
    assert max(float((a - b).abs().max()) for a, b in zip(est.free[1:], free)) < 1e-12
    gap = max(float((a - b.detach()).abs().max()) for a, b in zip(net.W[1:] + net.b[1:], pub.W + pub.b))
    assert gap < 1e-12


def test_public_style_validates():
    net, *_ = _setup()
    with pytest.raises(ValueError, match="lrs"):
        PublicStyleEP(net, (0.1,), eps=0.5)
    with pytest.raises(TypeError, match="net"):
        PublicStyleEP("net", (0.1,), eps=0.5)
