"""First arrival under Langevin noise (PAPER.md §5, "Noise").

With T > 0 the free and nudged runs from ``h*`` are Langevin chains. Linearised
around ``h*`` (A = I − εH, H = ∂²E/∂h² at h*), the noise a chain has gathered
after t steps is Gaussian with covariance

    Σ_t = 2εT Σ_{s=0}^{t−1} A^s A^{sᵀ}            (one chain)

and the difference δ = h^β − h^0 of two chains carries 2Σ_t when their noises
are independent, 0 when they share their random numbers (common random
numbers). The mean of δ_k(d+1) is the noiseless arrival −β ε^{d+1} g_k, so the
mean of M independent pairs has, per layer,

    SNR_k(M) = β ε^{d+1} ‖g_k‖ / sqrt(2 tr Σ_{d+1}[k, k] / M),

which for weak coupling (H ≈ I, so Σ_t ≈ 2εT c_t I with c_t = Σ_{s<t} (1 − ε)^{2s}) is
β ε^{d+1}‖g_k‖ / sqrt(2·2εT c_{d+1} n_k / M).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .checks import check_eps, check_positive_int, check_real, check_temperature, check_tensor
from .dynamics import run
from .gradients import chain_gradient, hessian
from .network import LayeredEBM, State

__all__ = ["NoisyArrival", "linear_noise_covariance", "arrival_noise", "noisy_arrival", "group_snr"]


def _check_single(net: LayeredEBM, h_star: State) -> None:
    net.check_state(h_star, "h_star")
    if h_star[0].shape[0] != 1:
        raise ValueError(f"h_star: expected a single input (batch 1), got batch {h_star[0].shape[0]}")


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
    if not isinstance(independent, bool):
        raise TypeError(f"independent: expected bool, got {type(independent).__name__}")
    N = net.N
    c = 2.0 if independent else 0.0
    out: list = [None] * (N + 1)
    offsets = [0]
    for n in net.sizes[1:]:
        offsets.append(offsets[-1] + n)
    for k in range(1, N + 1):
        d = N - k
        S = linear_noise_covariance(net, h_star, steps=d + 1, eps=eps, T=T)
        lo, hi = offsets[k - 1], offsets[k]
        block = S[:, lo:hi, lo:hi]
        out[k] = torch.sqrt(c * torch.diagonal(block, dim1=-2, dim2=-1).sum(-1))
    return out


@dataclass
class NoisyArrival:
    """``delta[k]``: δ_k(d+1) for each of the chains, shape ``(chains, n_k)`` (index 0 unused);
    ``predicted[k]``: the noiseless arrival −β ε^{d+1} g_k, shape ``(n_k,)``."""

    delta: list
    predicted: list
    g: list


def noisy_arrival(
    net: LayeredEBM,
    h_star: State,
    target: Tensor,
    *,
    eps: float,
    beta: float,
    T: float,
    chains: int,
    gen_nudged: torch.Generator,
    gen_free: torch.Generator,
) -> NoisyArrival:
    """δ_k(d+1) = h^β_k(d+1) − h^0_k(d+1) for ``chains`` pairs of Langevin chains from one ``h*``.

    The nudged chains draw from ``gen_nudged``, the free ones from ``gen_free``:
    two generators seeded alike give common random numbers. ``h_star`` and
    ``target`` hold a single input (batch 1); the chains run as one batch.
    """
    _check_single(net, h_star)
    target = net.check_target(target, 1)
    eps = check_eps(eps)
    beta = check_real("beta", beta)
    if beta == 0.0:
        raise ValueError("beta: must be non-zero to nudge the output")
    T = check_temperature(T)
    check_positive_int("chains", chains)
    for name, gen in (("gen_nudged", gen_nudged), ("gen_free", gen_free)):
        if not isinstance(gen, torch.Generator):
            raise TypeError(f"{name}: expected torch.Generator, got {type(gen).__name__}")
    N = net.N
    h0 = [h.expand(chains, -1).contiguous() for h in h_star]
    d_rep = target.expand(chains, -1).contiguous()
    nudged = run(net, h0, steps=N + 1, eps=eps, beta=beta, target=d_rep, T=T, generator=gen_nudged)
    free = run(net, h0, steps=N + 1, eps=eps, T=T, generator=gen_free)
    g = chain_gradient(net, h_star, target)
    delta: list = [None] * (N + 1)
    predicted: list = [None] * (N + 1)
    for k in range(1, N + 1):
        d = N - k
        delta[k] = nudged.h[k][d + 1] - free.h[k][d + 1]
        predicted[k] = (-beta * eps ** (d + 1) * g[k])[0]
    return NoisyArrival(delta, predicted, g)


def group_snr(samples: Tensor, M: int) -> tuple[float, float, float]:
    """Measured SNR of the mean of ``M`` samples: (snr, signal, noise).

    ``samples`` has shape ``(K, n)`` (K independent draws of an n-vector). The
    signal is ‖mean‖ over all K draws, debiased: sqrt(max(‖x̄‖² − tr Σ̂ / K, 0));
    the noise is the RMS norm of the deviation of a mean of M draws, measured on
    the R = K // M disjoint groups: sqrt(Σ_r ‖x̄_r − x̄‖² / (R − 1)).
    """
    samples = check_tensor("samples", samples, shape=(None, None))
    check_positive_int("M", M)
    K = samples.shape[0]
    R = K // M
    if R < 2:
        raise ValueError(f"M: need at least two groups of M samples, got K = {K} samples for M = {M}")
    mean = samples.mean(0)
    var_tr = float(samples.var(0, unbiased=True).sum())
    signal = max(float(mean @ mean) - var_tr / K, 0.0) ** 0.5
    groups = samples[: R * M].reshape(R, M, -1).mean(1)
    dev = groups - groups.mean(0)
    noise = (float((dev * dev).sum()) / (R - 1)) ** 0.5
    if noise == 0.0:
        raise ValueError("samples: no spread between groups, SNR undefined")
    return signal / noise, signal, noise
