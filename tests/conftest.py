"""Shared fixtures: random networks in float64 and the smoke execution of the book."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import ebmlib as eb

ROOT = Path(__file__).resolve().parents[1]
f64 = torch.float64


def random_net(sizes, activation="sigmoid", seed=0, gain=2.0, bias_std=0.5, dtype=f64, device="cpu", bias_mean=0.0):
    return eb.LayeredEBM(sizes, activation, seed=seed, gain=gain, bias_std=bias_std, bias_mean=bias_mean, dtype=dtype,
                         device=device)


def hard_sigmoid_fixed_point(eps):
    """A hard-sigmoid network (clips by default) at an exact fixed point with pinned units: (net, x, d, h*)."""
    net = random_net([5, 7, 6, 4], "hard_sigmoid", seed=2, gain=0.5, bias_std=0.1, bias_mean=0.5)
    x, d, _ = random_batch(net, B=4, seed=5)
    r = eb.relax(net, x, eps=eps, tol=0.0, max_steps=5000, check_every=1)
    assert r.converged
    return net, x, d, r.h


def assert_raises_exactly(call, exc, msg):
    """``call()`` raises exactly ``exc`` (not a subclass) with exactly the message ``msg``."""
    with pytest.raises(exc) as info:
        call()
    assert type(info.value) is exc
    assert str(info.value) == msg


def random_batch(net, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, net.sizes[0], generator=g, dtype=net.dtype).to(net.device)
    d = torch.rand(B, net.sizes[-1], generator=g, dtype=net.dtype).to(net.device)
    h = [x] + [torch.randn(B, n, generator=g, dtype=net.dtype).to(net.device) for n in net.sizes[1:]]
    return x, d, h


def reference_trajectory(net, h0, steps, **kw):
    """``steps`` reference steps (:func:`ebmlib.step`) from ``h0``: the list of states, ``h0`` first."""
    import ebmlib as eb

    out, h = [h0], h0
    for _ in range(steps):
        h = eb.step(net, h, **kw)
        out.append(h)
    return out


def assert_trajectories_match(traj, ref, N, tol=1e-12):
    """Every recorded state of ``traj`` (an :class:`ebmlib.Trajectory`) equals ``ref`` to ``tol``, layer by layer."""
    for t, h in enumerate(ref):
        for k in range(1, N + 1):
            err = float((traj.h[k][t] - h[k]).abs().max())
            assert err <= tol, f"step {t}, layer {k}: {err:.3g}"


@pytest.fixture(scope="session")
def smoke_build() -> Path:
    """Execute every chapter once under the smoke profile into _build/test (shared by the slow tests)."""
    from ebmlib.book.execute import execute

    build = ROOT / "_build" / "test"
    if os.environ.get("EBMLIB_REUSE_SMOKE") and (build / "executed").exists():
        return build
    import shutil

    shutil.rmtree(build / "figures", ignore_errors=True)
    execute(["all"], profile="smoke", build_dir=build, root=ROOT)
    return build


@pytest.fixture(scope="session")
def smoke_site(smoke_build: Path) -> Path:
    """The strict site build from the smoke-executed notebooks."""
    from ebmlib.book.site import build

    return build(build_dir=smoke_build, root=ROOT)
