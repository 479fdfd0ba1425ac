"""Langevin inference (PAPER.md §3, §5 "Noise"): its stationary density, chains' moments, its noise.

Langevin inference ``h_{t+1} = h_t − ε ∂F/∂h + sqrt(2εT) ξ_t`` samples, for small ε, the density

    p_T(h) = exp(−F(h)/T) / Z,   Z = ∫ exp(−F(h)/T) dh.

For a network with a single unit above the input (sizes ``[n_0, 1]``) ``Z`` is a 1-D integral: the
density is computed here on a grid by quadrature (trapezoid rule), and the samples of a chain are
compared with it by :func:`ebmlib.ks_distance` or :func:`ebmlib.tv_distance`.

Linearised around a fixed point ``h*`` (A = I − εH, H = ∂²E/∂h² at h*), the noise a chain has
gathered after t steps is Gaussian with covariance ``Σ_t = 2εT Σ_{s<t} A^s A^{sᵀ}``; the difference
of two chains carries 2Σ_t when their noises are independent, 0 when they share their random
numbers (common random numbers): :func:`linear_noise_covariance`, :func:`arrival_noise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_bool, check_eps, check_positive_int, check_real, check_temperature, check_tensor
from .dynamics import run
from .gradients import hessian
from .network import LayeredEBM, State

__all__ = [
    "Density1D",
    "boltzmann_density_1d",
    "LangevinMoments",
    "langevin_moments",
    "linear_noise_covariance",
    "arrival_noise",
]


@dataclass
class Density1D:
    """A normalised density on a uniform grid: ``p[i] = p(grid[i])``, ``cdf[i] = ∫_{grid[0]}^{grid[i]} p``."""

    grid: Tensor
    p: Tensor
    cdf: Tensor

    def cdf_at(self, h: Tensor) -> Tensor:
        """The cumulative distribution at ``h`` (linear interpolation; 0 / 1 outside the grid)."""
        h = check_tensor("h", h, dtype=self.grid.dtype, device=self.grid.device)
        g = self.grid
        dx = g[1] - g[0]
        pos = ((h - g[0]) / dx).clamp(0.0, len(g) - 1.0)
        i = pos.floor().long().clamp(max=len(g) - 2)
        w = pos - i.to(pos.dtype)
        return self.cdf[i] * (1 - w) + self.cdf[i + 1] * w

    def mean(self) -> float:
        """∫ h p(h) dh (trapezoid rule)."""
        return float(torch.trapezoid(self.grid * self.p, self.grid))

    def var(self) -> float:
        """∫ (h − mean)² p(h) dh (trapezoid rule)."""
        m = self.mean()
        return float(torch.trapezoid((self.grid - m) ** 2 * self.p, self.grid))


def boltzmann_density_1d(net: LayeredEBM, x: Tensor, T: float, grid: Tensor) -> Density1D:
    """The density ``exp(−E(h)/T)/Z`` of the single unit of ``net`` (sizes ``[n_0, 1]``) given ``x``.

    ``x`` has shape ``(1, n_0)``; ``grid`` is a uniform 1-D grid of states wide enough that the
    density is negligible at both ends (checked: the end values must be below 1e-10 of the peak).
    ``E`` is ``net.energy``, so the density is exactly the one of the book's model.
    """
    if net.sizes[1:] != (1,):
        raise ValueError(f"net: expected a single unit above the input (sizes [n_0, 1]), got sizes {net.sizes}")
    x = check_tensor("x", x, shape=(1, net.sizes[0]), dtype=net.dtype, device=net.device)
    T = check_real("T", T)
    if T <= 0.0:
        raise ValueError(f"T: the temperature must be > 0 for a density, got {T}")
    grid = check_tensor("grid", grid, shape=(None,), dtype=net.dtype, device=net.device)
    if grid.numel() < 3:
        raise ValueError(f"grid: need at least 3 points, got {grid.numel()}")
    steps = grid[1:] - grid[:-1]
    if not bool((steps > 0).all()) or float((steps - steps[0]).abs().max()) > 1e-9 * float(steps[0].abs()) * grid.numel():
        raise ValueError("grid: expected a uniform, increasing grid")
    h = [x.expand(grid.numel(), -1), grid.unsqueeze(-1)]
    E = net.energy(h)
    logp = -(E - E.min()) / T
    p = torch.exp(logp)
    if float(max(p[0], p[-1])) > 1e-10:
        raise ValueError(f"grid: too narrow, the density at its ends is {float(max(p[0], p[-1])):.2e} of the peak")
    Z = torch.trapezoid(p, grid)
    p = p / Z
    cdf = torch.cat([p.new_zeros(1), torch.cumulative_trapezoid(p, grid)])
    cdf = cdf / cdf[-1]
    return Density1D(grid, p, cdf)


@dataclass
class LangevinMoments:
    """Moments of Langevin chains after a burn-in, pooled over chains and recorded steps.

    ``mean[k]`` and ``var[k]`` have shape ``(n_k,)`` (index 0 is None); ``h`` is the final state of
    every chain; ``samples`` the number of (chain, step) pairs pooled per unit.
    """

    mean: list
    var: list
    h: State
    samples: int


def langevin_moments(
    net: LayeredEBM,
    h0: State,
    *,
    steps: int,
    burn_in: int,
    eps: float,
    T: float,
    generator: torch.Generator,
    chunk: int = 100,
    clip: bool | None = None,
) -> LangevinMoments:
    """Run ``steps`` Langevin steps (``eb.run``, β = 0) from ``h0``; pool the states after ``burn_in``.

    Runs in chunks of ``chunk`` steps, so memory stays ``O(chunk · B · Σ n_k)`` however long the
    chains; only running sums are kept (float64 accumulators). With ``steps == burn_in`` only the
    final states are pooled (one sample per chain).
    """
    check_positive_int("steps", steps)
    check_positive_int("burn_in", burn_in, minimum=0)
    check_positive_int("chunk", chunk)
    if burn_in > steps:
        raise ValueError(f"burn_in: must be <= steps = {steps}, got {burn_in}")
    net.check_state(h0, "h0")
    s1 = [None] + [torch.zeros(n, dtype=torch.float64, device=net.device) for n in net.sizes[1:]]
    s2 = [None] + [torch.zeros(n, dtype=torch.float64, device=net.device) for n in net.sizes[1:]]
    count = 0
    h, t = list(h0), 0
    while t < steps:
        n = min(chunk, steps - t)
        traj = run(net, h, steps=n, eps=eps, T=T, generator=generator, clip=clip, check_every=n)
        first = max(burn_in - t, 0) + 1 if t < burn_in else 1  # recorded index of the first pooled step
        if t + n >= burn_in and first <= n:
            for k in range(1, net.N + 1):
                block = traj.h[k][first:].to(torch.float64)
                s1[k] += block.sum((0, 1))
                s2[k] += (block * block).sum((0, 1))
            count += (n - first + 1) * h[0].shape[0]
        h = traj.at(n)
        h = [h[0].contiguous()] + [hk.clone() for hk in h[1:]]
        t += n
    if count == 0:  # steps == burn_in: pool the final states
        for k in range(1, net.N + 1):
            s1[k] += h[k].to(torch.float64).sum(0)
            s2[k] += (h[k].to(torch.float64) ** 2).sum(0)
        count = h[0].shape[0]
    mean = [None] + [s1[k] / count for k in range(1, net.N + 1)]
    var = [None] + [(s2[k] / count - mean[k] ** 2).clamp_min(0.0) * count / max(count - 1, 1)
                    for k in range(1, net.N + 1)]
    return LangevinMoments(mean, var, h, count)


def linear_noise_covariance(net: LayeredEBM, h_star: State, *, steps: int, eps: float, T: float) -> Tensor:
    """Σ_t = 2εT Σ_{s<t} A^s A^{sᵀ}, A = I − εH(h*): covariance of one linearised chain after ``steps`` steps.

    Returns ``(B, n, n)`` with ``n = Σ_{k≥1} n_k`` (layers in order, as :func:`ebmlib.flatten`).
    """
    net.check_state(h_star, "h_star")
    check_positive_int("steps", steps)
    eps = check_eps(eps)
    T = check_temperature(T)
    H = hessian(net, h_star)
    n = H.shape[-1]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    A = eye - eps * H
    P = eye.expand_as(H).clone()  # A^s
    S = torch.zeros_like(H)
    for _ in range(steps):
        S = S + P @ P.transpose(-1, -2)
        P = A @ P
    return 2.0 * eps * T * S


def arrival_noise(
    net: LayeredEBM, h_star: State, *, eps: float, T: float, independent: bool = True
) -> list:
    """Predicted RMS norm of the noise in δ_k(d+1) for one pair of chains, per layer.

    sqrt(c · tr Σ_{d+1}[k, k]) with c = 2 for independent free and nudged chains
    (each contributes Σ) and c = 0 for common random numbers at linear order.
    Returns a list indexed by layer (index 0 None) of tensors of shape ``(B,)``.
    """
    check_bool("independent", independent)
    N = net.N
    c = 2.0 if independent else 0.0
    out: list = [None] * (N + 1)
    offsets = [0]
    for n in net.sizes[1:]:
        offsets.append(offsets[-1] + n)
    for k in range(1, N + 1):
        S = linear_noise_covariance(net, h_star, steps=N - k + 1, eps=eps, T=T)
        lo, hi = offsets[k - 1], offsets[k]
        block = S[:, lo:hi, lo:hi]
        out[k] = torch.sqrt(c * torch.diagonal(block, dim1=-2, dim2=-1).sum(-1))
    return out
