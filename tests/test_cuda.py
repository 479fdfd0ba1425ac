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
    """Free phase, nudged phase and the EP weight update (ebmlib.bench.ep_update), float32, CPU vs CUDA."""
    from ebmlib import bench

    nets = [random_net([30, 20, 10], "hard_sigmoid", seed=4, gain=1.0, dtype=torch.float32)]
    nets.append(nets[0].to("cuda"))
    x, d, h = random_batch(nets[0], B=8)
    out = []
    for net in nets:
        xs, ds = x.to(net.device), d.to(net.device)
        free = eb.relax(net, xs, eps=0.5, tol=0.0, max_steps=20).h
        nudged = eb.relax(net, xs, free, eps=0.5, beta=1.0, target=ds, tol=0.0, max_steps=4).h
        bench.ep_update(net, free, nudged, 1.0, [0.1, 0.05])
        out.append([t.cpu() for t in nudged[1:]] + [p.cpu() for p in net.parameters()])
    for a, b in zip(*out):
        assert torch.allclose(b, a, atol=1e-5)
