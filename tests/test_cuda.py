"""CUDA variants of the core checks; skipped cleanly without a GPU."""

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_force_and_first_arrival_on_cuda_match_cpu():
    net = random_net([6, 8, 7, 6, 4], seed=1)
    x, d, h = random_batch(net, B=3)
    gpu = net.to("cuda")
    xs, ds = x.cuda(), d.cuda()
    r_cpu = eb.relax(net, x, eps=0.5, tol=1e-12)
    r_gpu = eb.relax(gpu, xs, eps=0.5, tol=1e-12)
    for k in range(1, net.N + 1):
        assert torch.allclose(r_gpu.h[k].cpu(), r_cpu.h[k], atol=1e-10)
    a = eb.run(net, r_cpu.h, steps=6, eps=0.5, beta=1e-6, target=d)
    b = eb.run(gpu, [t.cuda() for t in r_cpu.h], steps=6, eps=0.5, beta=1e-6, target=ds)
    for k in range(1, net.N + 1):
        assert torch.allclose(b.h[k].cpu(), a.h[k], atol=1e-10)


@cuda
def test_float32_step_on_cuda_matches_cpu():
    net = random_net([20, 16, 10], seed=2, dtype=torch.float32)
    x, d, h = random_batch(net, B=8)
    a = eb.step(net, h, eps=0.5, beta=0.5, target=d)
    b = eb.step(net.to("cuda"), [t.cuda() for t in h], eps=0.5, beta=0.5, target=d.cuda())
    for k in range(1, net.N + 1):
        assert torch.allclose(b[k].cpu(), a[k], atol=1e-5)


@cuda
def test_langevin_generator_on_cuda():
    net = random_net([3, 4, 2], seed=3).to("cuda")
    x = torch.rand(2, 3, dtype=torch.float64, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    tr = eb.run(net, net.init_state(x), steps=5, eps=0.1, T=0.1, generator=g)
    assert tr.h[1].is_cuda


@cuda
def test_float32_ep_training_step_on_cuda_matches_cpu():
    """Free phase, nudged phase and the EP weight update (ebmlib.apply_update), float32, CPU vs CUDA."""

    nets = [random_net([30, 20, 10], "hard_sigmoid", seed=4, gain=1.0, dtype=torch.float32)]
    nets.append(nets[0].to("cuda"))
    x, d, h = random_batch(nets[0], B=8)
    out = []
    for net in nets:
        xs, ds = x.to(net.device), d.to(net.device)
        free = eb.relax(net, xs, eps=0.5, tol=0.0, max_steps=20).h
        nudged = eb.relax(net, xs, free, eps=0.5, beta=1.0, target=ds, tol=0.0, max_steps=4).h
        eb.apply_update(net, eb.ep_gradient(net, free, nudged, 1.0), (0.1, 0.05))
        out.append([t.cpu() for t in nudged[1:]] + [p.cpu() for p in net.parameters()])
    for a, b in zip(*out):
        assert torch.allclose(b, a, atol=1e-5)


@cuda
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid"])
@pytest.mark.parametrize("schedule", ["synchronous", "odd_even"])
def test_relax_on_cuda_matches_cpu_float64(activation, schedule):
    """The flat-buffer loop on CUDA: every activation, both schedules, free then nudged (with the clip)."""
    net = random_net([9, 8, 7, 6, 4], activation, seed=5, gain=1.5)
    x, d, h = random_batch(net, B=5, seed=3)
    gpu = net.to("cuda")
    out = []
    for n, xs, ds in ((net, x, d), (gpu, x.cuda(), d.cuda())):
        free = eb.relax(n, xs, eps=0.4, tol=0.0, max_steps=60, schedule=schedule)
        nudged = eb.relax(n, xs, free.h, eps=0.4, beta=0.7, target=ds, tol=0.0, max_steps=7, check_every=3)
        out.append((free, nudged))
    (fc, nc), (fg, ng) = out
    assert fg.steps == fc.steps and abs(fg.residual - fc.residual) <= 1e-10 * max(1.0, fc.residual)
    for k in range(1, net.N + 1):
        assert fg.h[k].is_cuda
        assert float((fg.h[k].cpu() - fc.h[k]).abs().max()) <= 1e-10
        assert float((ng.h[k].cpu() - nc.h[k]).abs().max()) <= 1e-10


@cuda
def test_first_arrival_identity_on_cuda():
    """The core identity (PAPER.md §4) measured on CUDA in float64 agrees with the CPU to 1e-10."""
    net = random_net([6, 8, 7, 6, 4], seed=6)
    x, d, _ = random_batch(net, B=3, seed=4)
    star = eb.relax(net, x, eps=0.5, tol=1e-13).h
    a = eb.first_arrival(net, star, d, eps=0.5, beta=1e-6)
    gpu = net.to("cuda")
    b = eb.first_arrival(gpu, [t.cuda() for t in star], d.cuda(), eps=0.5, beta=1e-6)
    for k in range(1, net.N + 1):
        assert b.delta[k].is_cuda and b.silent[k]
        # δ is a difference of O(1) states: round-off differences are absolute, ~1e-16 per operation
        assert float((b.delta[k].cpu() - a.delta[k]).abs().max()) <= 1e-12
        assert abs(b.cos[k] - a.cos[k]) <= 1e-10
        # the norm ratio inherits the relative round-off of the tiny arrival δ_k(d+1) ~ βε^{d+1}‖g_k‖
        rel = float((b.arrival[k].cpu() - a.arrival[k]).norm() / a.arrival[k].norm()) + float(
            (b.predicted[k].cpu() - a.predicted[k]).norm() / a.predicted[k].norm())
        assert abs(b.ratio[k] - a.ratio[k]) <= 2 * a.ratio[k] * rel + 1e-14
        assert abs(b.ratio[k] - 1) <= 1e-5
        assert b.cos[k] > 1 - 1e-6


@cuda
def test_divergence_on_cuda_reports_the_cpu_step():
    net = random_net([4, 5, 3], seed=5)
    x, d, _ = random_batch(net, B=2)
    steps = []
    for n, xs, ds in ((net, x, d), (net.to("cuda"), x.cuda(), d.cuda())):
        with pytest.raises(eb.DivergenceError) as info:
            eb.run(n, n.init_state(xs), steps=500, eps=1.0, beta=10.0, target=ds * 0 + 1, check_every=25)
        steps.append(info.value.step)
    assert steps[0] == steps[1]


@cuda
def test_langevin_on_cuda_is_reproducible_with_its_generator():
    net = random_net([3, 4, 2], seed=3).to("cuda")
    x = torch.rand(2, 3, dtype=torch.float64, device="cuda")
    runs = [eb.run(net, net.init_state(x), steps=20, eps=0.1, T=0.1,
                   generator=torch.Generator(device="cuda").manual_seed(s)) for s in (0, 0, 1)]
    assert torch.equal(runs[0].h[2], runs[1].h[2]) and not torch.equal(runs[0].h[2], runs[2].h[2])


@cuda
def test_training_epoch_on_cuda_matches_cpu_float32():
    """One epoch of EP training (ebmlib.learning.train) on a digits subset: CPU and CUDA agree."""
    from ebmlib.learning import TrainConfig, train

    ds = eb.load_digits(0.25, seed=0)
    ds = eb.Dataset("digits-small", ds.x_train[:100], ds.y_train[:100], ds.x_test[:40], ds.y_test[:40], 10)
    hist = [train(TrainConfig(sizes=(64, 16, 10), method="ep", lrs=(0.1, 0.05), epochs=1, nudged_steps=8,
                              eval_steps=50, device=dev), ds, progress=False) for dev in ("cpu", "cuda")]
    assert hist[1].net.device.type == "cuda"
    for a, b in zip(hist[0].net.parameters(), hist[1].net.parameters()):
        assert float((b.cpu() - a).abs().max()) <= 1e-4
    assert hist[0].train_error == hist[1].train_error
