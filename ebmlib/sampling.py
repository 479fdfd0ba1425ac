"""The Boltzmann density exp(−F/T) by quadrature, and distances to Langevin samples (PAPER.md §3).

Langevin inference ``h_{t+1} = h_t − ε ∂F/∂h + sqrt(2εT) ξ_t`` samples, for small ε, the density

    p_T(h) = exp(−F(h)/T) / Z,   Z = ∫ exp(−F(h)/T) dh.

For a network with a single unit above the input (sizes ``[n_0, 1]``) ``Z`` is a 1-D integral: the
density is computed here on a grid by quadrature (trapezoid rule), and the samples of a chain are
compared with it by the Kolmogorov–Smirnov distance ``sup_h |F̂_M(h) − F(h)|`` (bin free) or by the
total variation distance between a histogram and the exact bin probabilities.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_positive_int, check_real, check_tensor
from .dynamics import run
from .network import LayeredEBM, State

__all__ = [
    "Density1D",
    "boltzmann_density_1d",
    "ks_distance",
    "tv_distance",
    "ks_critical",
    "LangevinMoments",
    "langevin_moments",
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


def _samples(samples: object, density: Density1D) -> Tensor:
    s = check_tensor("samples", samples, dtype=density.grid.dtype, device=density.grid.device)
    s = s.flatten()
    if s.numel() < 2:
        raise ValueError(f"samples: need at least 2 samples, got {s.numel()}")
    return s


def ks_distance(samples: Tensor, density: Density1D) -> float:
    """Kolmogorov–Smirnov distance ``sup_h |F̂_M(h) − F(h)|`` between samples and a density."""
    s = torch.sort(_samples(samples, density)).values
    M = s.numel()
    F = density.cdf_at(s)
    i = torch.arange(1, M + 1, dtype=s.dtype, device=s.device)
    return float(torch.maximum(i / M - F, F - (i - 1) / M).max())


def ks_critical(M: int, alpha: float = 0.01) -> float:
    """Asymptotic KS critical value ``sqrt(−ln(α/2)/2) / sqrt(M)`` for M independent samples."""
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ValueError(f"M: expected a positive integer, got {M!r}")
    alpha = check_real("alpha", alpha)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    return math.sqrt(-math.log(alpha / 2) / 2) / math.sqrt(M)


def tv_distance(samples: Tensor, density: Density1D, bins: int = 50) -> float:
    """Total variation ``½ Σ_i |p̂_i − p_i|`` between a histogram of ``samples`` and the exact bin masses.

    The bins split the grid's range into ``bins`` equal parts; samples outside it count in the end bins.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected a positive integer, got {bins!r}")
    s = _samples(samples, density)
    g = density.grid
    edges = torch.linspace(float(g[0]), float(g[-1]), bins + 1, dtype=g.dtype, device=g.device)
    mass = density.cdf_at(edges)
    p = mass[1:] - mass[:-1]
    idx = torch.bucketize(s, edges[1:-1])
    counts = torch.bincount(idx, minlength=bins).to(g.dtype)
    return float(0.5 * (counts / s.numel() - p).abs().sum())


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
