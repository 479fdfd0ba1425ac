"""The fused relaxation loop (ebmlib._loop) against the reference step ebmlib.step, and the benchmark's pieces."""

import pytest
import torch
from conftest import assert_trajectories_match, random_batch, random_net, reference_trajectory

import ebmlib as eb
from ebmlib.book import bench

TOL = 1e-12
SIZES = [7, 9, 6, 5, 4]  # three hidden layers: every kind of layer (first, middle, output)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid"])
@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.7, -0.3])
def test_run_matches_reference_step(activation, clip, beta):
    net = random_net(SIZES, activation, seed=4, gain=1.5)
    x, d, h = random_batch(net, B=5, seed=1)
    h0 = [x] + [t.clamp(net.activation.lo, net.activation.hi) * 0.9 + 0.05 for t in h[1:]]
    traj = eb.run(net, h0, steps=30, eps=0.4, beta=beta, target=d, clip=clip)
    ref = reference_trajectory(net, h0, 30, eps=0.4, beta=beta, target=d, clip=clip)
    assert_trajectories_match(traj, ref, net.N)
    # eb.step is the same map, and leaves its argument alone
    before = [t.clone() for t in h0]
    one = eb.step(net, h0, eps=0.4, beta=beta, target=d, clip=clip)
    for k in range(1, net.N + 1):
        assert float((one[k] - ref[1][k]).abs().max()) <= TOL
        assert torch.equal(h0[k], before[k])


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid"])
def test_autograd_step_matches_reference_step(activation):
    net = random_net(SIZES, activation, seed=5)
    x, d, h = random_batch(net, B=3, seed=2)
    for beta in (0.0, 0.5):
        a = bench.autograd_step(net, h, eps=0.3, beta=beta, target=d)
        b = eb.step(net, h, eps=0.3, beta=beta, target=d)
        for k in range(1, net.N + 1):
            assert float((a[k] - b[k]).abs().max()) <= TOL


@pytest.mark.parametrize("sizes", [[6, 4], [6, 5, 3]])
def test_shallow_networks_and_relax_match_reference(sizes):
    """One and two layers (the drive alone / drive + top-down), free then nudged, through relax."""
    net = random_net(sizes, "sigmoid", seed=6)
    x, d, h = random_batch(net, B=4, seed=3)
    drive = net.input_drive(x).clone()
    r = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=25, check_every=7)
    ref = reference_trajectory(net, net.init_state(x), 25, eps=0.5)
    for k in range(1, net.N + 1):
        assert float((r.h[k] - ref[-1][k]).abs().max()) <= TOL
    rb = eb.relax(net, x, r.h, eps=0.5, beta=0.5, target=d, tol=0.0, max_steps=6, check_every=4)
    refb = reference_trajectory(net, r.h, 6, eps=0.5, beta=0.5, target=d)
    for k in range(1, net.N + 1):
        assert float((rb.h[k] - refb[-1][k]).abs().max()) <= TOL
    assert torch.equal(net.input_drive(x), drive)  # the hoisted drive was never written into


def test_langevin_run_matches_reference_with_the_same_draws():
    net = random_net(SIZES, "tanh", seed=7)
    x, d, h = random_batch(net, B=3, seed=4)
    eps, T = 0.2, 0.05
    traj = eb.run(net, h, steps=10, eps=eps, T=T, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    ref = h
    for t in range(1, 11):
        ref = eb.step(net, ref, eps=eps)
        for k in range(1, net.N + 1):  # the step draws ξ layer by layer, after the deterministic update
            ref[k] = ref[k] + (2 * eps * T) ** 0.5 * torch.randn(ref[k].shape, generator=g, dtype=ref[k].dtype)
        for k in range(1, net.N + 1):
            assert float((traj.h[k][t] - ref[k]).abs().max()) <= TOL


def test_float32_step_close_to_float64_reference():
    net = random_net([784, 50, 10], "hard_sigmoid", seed=8, gain=1.0, bias_std=0.1)
    x, d, h = random_batch(net, B=6, seed=5)
    h = [x] + [t.clamp(0, 1) for t in h[1:]]
    ref = eb.step(net, h, eps=0.5, beta=1.0, target=d)
    net32 = net.to(dtype=torch.float32)
    got = eb.step(net32, [t.float() for t in h], eps=0.5, beta=1.0, target=d.float())
    for k in (1, 2):
        assert float((got[k].double() - ref[k]).abs().max()) <= 1e-5


def test_ep_update_matches_the_energy_derivative():
    """(1/β)(∂E/∂θ(h*) − ∂E/∂θ(h^β)) by autograd equals the EP estimator's update with lr = 1."""
    net = random_net([5, 4, 3], "sigmoid", seed=9)
    x, d, h = random_batch(net, B=4, seed=6)
    free = eb.relax(net, x, eps=0.5).h
    nudged = eb.relax(net, x, free, eps=0.5, beta=0.2, target=d).h
    params = net.parameters()
    for p in params:
        p.requires_grad_(True)
    gf = torch.autograd.grad(net.energy(free).mean(), params)
    gn = torch.autograd.grad(net.energy(nudged).mean(), params)
    for p in params:
        p.requires_grad_(False)
    want = [(a - b) / 0.2 for a, b in zip(gf, gn)]
    before = [p.clone() for p in params]
    eb.apply_update(net, eb.ep_gradient(net, free, nudged, 0.2), (1.0, 1.0))
    for p, p0, w in zip(net.parameters(), before, want):
        assert float((p - p0 - w).abs().max()) <= 1e-12


def test_flops_count():
    assert bench.step_matmuls([784, 500, 10], 20) == [(20, 500, 10), (20, 10, 500)]
    assert bench.step_flops([784, 500, 500, 10], 2) == 2 * 2 * (500 * 500 + 500 * 10) * 2
    with pytest.raises(ValueError, match="sizes"):
        bench.step_flops([784], 2)
    with pytest.raises(ValueError, match="batch"):
        bench.step_flops([784, 10], 0)


def test_reference_step_validates():
    net = random_net([4, 3], seed=0)
    x, d, h = random_batch(net, B=2)
    with pytest.raises(ValueError, match="target"):
        eb.step(net, h, eps=0.5, beta=1.0)
    with pytest.raises(ValueError, match="eps"):
        bench.autograd_step(net, h, eps=2.0)
    with pytest.raises(ValueError, match="lrs"):
        eb.apply_update(net, eb.ep_gradient(net, h, h, 1.0), (0.1, 0.1))


def test_bench_pieces_run_and_report():
    r = bench.bench_step((12, 8, 4), 3, steps=2, reps=1, activation="sigmoid", device=torch.device("cpu"))
    for key in ("step_time_s", "roofline_ratio", "speedup_vs_autograd", "device", "dtype", "threads", "torch",
                "repetitions"):
        assert key in r
    assert r["flops_per_step"] == bench.step_flops((12, 8, 4), 3) and r["roofline_ratio"] > 0
    ep = bench.bench_ep_epoch(minibatches=1, reps=1, device=torch.device("cpu"))
    assert ep["extrapolated"] and ep["epoch_time_s"] > 0


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid"])
def test_alternate_schedule_reaches_the_same_fixed_point(activation):
    net = random_net([8, 10, 9, 7, 4], activation, seed=10, gain=1.0)
    x, d, h = random_batch(net, B=6, seed=7)
    sync = eb.relax(net, x, eps=0.5, tol=1e-12, max_steps=20_000)
    alt = eb.relax(net, x, eps=0.5, tol=1e-12, max_steps=20_000, schedule="odd_even")
    assert sync.converged and alt.converged
    for k in range(1, net.N + 1):
        assert float((sync.h[k] - alt.h[k]).abs().max()) <= 1e-9
    if not net.activation.clip_by_default:  # with the clip the fixed point is projected: force ≠ 0 at the walls
        f = net.force(alt.h)
        assert max(float(f[k].abs().max()) for k in range(1, net.N + 1)) <= 1e-10
    assert alt.steps <= sync.steps
    # nudged too, from the free fixed point
    sb = eb.relax(net, x, sync.h, eps=0.5, beta=0.5, target=d, tol=1e-12)
    ab = eb.relax(net, x, sync.h, eps=0.5, beta=0.5, target=d, tol=1e-12, schedule="odd_even")
    for k in range(1, net.N + 1):
        assert float((sb.h[k] - ab.h[k]).abs().max()) <= 1e-9


@pytest.mark.parametrize("activation, eps, beta, clip, T", [
    ("sigmoid", 0.5, 0.0, None, 0.0), ("sigmoid", 0.5, 0.7, None, 0.0), ("tanh", 0.3, 0.4, None, 0.02),
    ("hard_sigmoid", 1.0, 0.0, True, 0.0), ("hard_sigmoid", 0.6, -0.4, True, 0.0),  # ρ = id; ε = 1: exact block
    ("hard_sigmoid", 0.5, 0.3, False, 0.0), ("hard_sigmoid", 1.0, 0.5, True, 0.01)])
def test_alternate_schedule_is_one_sweep_of_half_steps(activation, eps, beta, clip, T):
    """Three sweeps of the fused loop from h0 against the reference step's odd-even schedule (the same draws),
    with N even (4) and odd (3: the output moves in the odd half)."""
    for sizes in (SIZES, SIZES[:-1]):
        net = random_net(sizes, activation, seed=11, gain=1.5)
        x, d, h = random_batch(net, B=3, seed=8)
        h0 = [x] + [t.sigmoid() for t in h[1:]]
        kw = dict(eps=eps, beta=beta, target=d, clip=clip, T=T, schedule="odd_even")
        r = eb.run(net, h0, steps=3, generator=torch.Generator().manual_seed(3) if T else None, **kw)
        g = torch.Generator().manual_seed(3) if T else None
        want = h0
        for t in (1, 2, 3):
            want = eb.step(net, want, generator=g, **kw)
            for k in range(1, net.N + 1):
                assert float((r.h[k][t] - want[k]).abs().max()) <= TOL, (sizes, t, k)


def test_relax_and_step_leave_their_inputs_alone_and_results_do_not_alias():
    """The loop runs in its own flat buffers: h0 is copied in, and each call returns its own state."""
    net = random_net(SIZES, "tanh", seed=12)
    x, d, h = random_batch(net, B=3, seed=9)
    before = [t.clone() for t in h]
    a = eb.relax(net, x, h, eps=0.5, tol=0.0, max_steps=13, check_every=4)
    b = eb.relax(net, x, h, eps=0.5, beta=0.3, target=d, tol=0.0, max_steps=13, check_every=5)
    s = eb.step(net, h, eps=0.5)
    for k in range(1, net.N + 1):
        assert torch.equal(h[k], before[k])
    keep = [t.clone() for t in a.h]
    for t in b.h[1:] + s[1:]:
        t.fill_(7.0)  # writing into one result leaves the others (and the other layers) untouched
    for k in range(1, net.N + 1):
        assert torch.equal(a.h[k], keep[k])
    assert a.h[1].is_contiguous() and a.h[1].shape == (3, SIZES[1])


@pytest.mark.parametrize("activation, clip, beta, inside, calls", [
    ("sigmoid", False, 0.0, False, 1 + 6 + 1 + 1),  # ρ, 2N − 2 = 6 products, ρ'⊙pre, lerp (N = 4)
    ("hard_sigmoid", True, 0.0, False, 1 + 6 + 1 + 1 + 1),  # … and the clip
    ("sigmoid", False, 0.5, False, 1 + 6 + 1 + 2 + 1),  # … and + βd − βy on the output
    # clipped hard sigmoid from states in [0, 1]: ρ = id, ρ' = 1; β·d rides in the output's constant
    ("hard_sigmoid", True, 0.0, True, 6 + 1 + 1),
    ("hard_sigmoid", True, 0.5, True, 6 + 1 + 1 + 1),
])
def test_a_step_is_one_call_per_elementwise_stage(activation, clip, beta, inside, calls):
    """ρ, ρ'⊙pre, the update and the clip run once over all layers (the flat buffers), not once per layer."""
    from ebmlib import _loop

    net = random_net(SIZES, activation, seed=13)
    x, d, h = random_batch(net, B=2, seed=10)
    if inside:
        h = [x] + [t.sigmoid() for t in h[1:]]
    cfg = _loop.configure(net, h, eps=0.5, beta=beta, target=d, noise_std=0.0, clip=clip, generator=None,
                          max_abs=1e6, states=2)
    assert cfg.identity_rho == inside
    assert len(_loop._program(net, cfg, 0, 1, None)) == calls


def test_the_identity_path_needs_every_state_inside_the_clip():
    """ρ = id is taken only for the clipped hard sigmoid with h_1 … h_N in [0, 1] (a NaN or 1 + 1e-12 is out),
    and a run from a state outside [0, 1] still matches the reference step (the general path)."""
    from ebmlib import _loop

    net = random_net(SIZES, "hard_sigmoid", seed=15, gain=1.5)
    x, d, h = random_batch(net, B=3, seed=12)
    inside = [x] + [t.sigmoid() for t in h[1:]]
    assert _loop.identity_rho_holds(net, (0.0, 1.0), inside)
    assert not _loop.identity_rho_holds(net, None, inside)
    assert not _loop.identity_rho_holds(random_net(SIZES, "sigmoid", seed=15), (0.0, 1.0), inside)
    for bad in (1.0 + 1e-12, -1e-12, float("nan")):
        h2 = [t.clone() for t in inside]
        h2[3][1, 2] = bad
        assert not _loop.identity_rho_holds(net, (0.0, 1.0), h2)
    traj = eb.run(net, h, steps=6, eps=0.4, beta=0.6, target=d, clip=True)  # h: N(0, 1), outside [0, 1]
    assert_trajectories_match(traj, reference_trajectory(net, h, 6, eps=0.4, beta=0.6, target=d, clip=True), net.N)


@pytest.mark.parametrize("sizes, calls", [([6, 5, 3], 2 + 2), ([7, 9, 6, 5, 4], 6 + 4)])
def test_an_exact_block_sweep_is_its_products_and_one_clip_per_layer(sizes, calls):
    """ε = 1, clipped hard sigmoid: each half sweep writes clip(pre_k) of its layers straight into the next
    buffer (no lerp, no copy of the layers that stay): products + one clip per layer (+ β's −βy)."""
    from ebmlib import _loop

    net = random_net(sizes, "hard_sigmoid", seed=16)
    x, d, h = random_batch(net, B=2, seed=13)
    h = [x] + [t.sigmoid() for t in h[1:]]
    for beta, extra in ((0.0, 0), (0.5, 1)):
        cfg = _loop.configure(net, h, eps=1.0, beta=beta, target=d, noise_std=0.0, clip=True, generator=None,
                              max_abs=1e6, states=2, schedule="odd_even")
        assert len(_loop._chunk(net, cfg, 0, 1)[0]) == calls + extra


def test_small_cpu_loops_run_on_one_thread_and_restore_the_setting(monkeypatch):
    """ONE_THREAD_MACS: the loop of a small step runs on one intra-op thread; torch's setting comes back,
    also after a DivergenceError, and the results do not depend on it (float64, 1e-12)."""
    from ebmlib import _loop as dynamics

    net = random_net(SIZES, "sigmoid", seed=14)
    x, d, h = random_batch(net, B=4, seed=11)
    assert dynamics.loop_threads(net, 4) == 1
    assert dynamics.loop_threads(eb.LayeredEBM([784, 500, 500, 10]), 256) is None
    seen = []
    real = dynamics._advance

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return real(*a, **k)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(dynamics, "_advance", spy)
        one = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=30)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        with pytest.raises(eb.DivergenceError):
            eb.relax(net, x, eps=1.0, beta=1e4, target=d * 0 + 5, max_steps=500)
        assert torch.get_num_threads() == 2
        seen.clear()
        monkeypatch.setattr(dynamics, "ONE_THREAD_MACS", 0)
        two = eb.relax(net, x, eps=0.5, tol=0.0, max_steps=30)
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)
    for k in range(1, net.N + 1):
        assert float((one.h[k] - two.h[k]).abs().max()) <= TOL


def test_an_unknown_schedule_is_named():
    net = random_net(SIZES, "sigmoid", seed=11)
    x, d, h = random_batch(net, B=3, seed=8)
    with pytest.raises(ValueError, match="schedule"):
        eb.relax(net, x, eps=0.5, schedule="random")
