"""The layered energy-based model (PAPER.md §2).

States are lists indexed as in the notation: ``h[0] = x`` (the clamped input
rate), ``h[k]`` of shape ``(B, n_k)`` for ``k = 1 … N``, and ``h[N] = y``.
Weights and biases follow the same convention: ``W[k]`` has shape
``(n_{k-1}, n_k)``, ``b[k]`` shape ``(n_k,)``; index 0 is unused (``None``).
Batch-first: every layer is a ``(B, n_k)`` tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from .activations import Activation, get_activation
from .checks import check_positive_int, check_real, check_tensor

__all__ = ["LayeredEBM", "State", "Feedback", "feedback_weights", "gamma_feedback"]

State = list  # list[Tensor]: h[0] = x, h[1..N]
Feedback = list  # [None, None, B_2, …, B_N]: top-down weights (layer k hears layer k+1 through B_{k+1})


def _affine(c: Tensor, r: Tensor, W: Tensor) -> Tensor:
    """c + r W, fused (addmm) for batch-first matrices, broadcast for extra leading dims."""
    if r.dim() == 2 and c.dim() <= 2:
        return torch.addmm(c, r, W)
    return c + r @ W


class LayeredEBM:
    """Hopfield-like layered energy (PAPER.md §2).

    E(h) = Σ_k [ ½‖h_k‖² − b_k·ρ(h_k) − ρ(h_{k−1})ᵀ W_k ρ(h_k) ],  ρ(h_0) := x.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str | Activation = "sigmoid",
        *,
        W: Optional[Sequence[Optional[Tensor]]] = None,
        b: Optional[Sequence[Optional[Tensor]]] = None,
        seed: int = 0,
        gain: float = 1.0,
        bias_std: float = 0.0,
        bias_mean: float = 0.0,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ):
        if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
            raise ValueError("sizes: need at least two layer sizes (input and output)")
        for i, n in enumerate(sizes):
            check_positive_int(f"sizes[{i}]", n)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
        self.sizes: tuple[int, ...] = tuple(int(n) for n in sizes)
        self.activation = get_activation(activation)
        device = torch.device(device)
        if W is None or b is None:
            check_real("gain", gain)
            check_real("bias_std", bias_std)
            check_real("bias_mean", bias_mean)
            gen = torch.Generator().manual_seed(int(seed))
            W0, b0 = [None], [None]
            for k in range(1, self.N + 1):
                n_in, n_out = self.sizes[k - 1], self.sizes[k]
                a = gain * math.sqrt(6.0 / (n_in + n_out))  # Glorot uniform
                W0.append((torch.rand(n_in, n_out, generator=gen, dtype=torch.float64) * 2 - 1) * a)
                b0.append(torch.randn(n_out, generator=gen, dtype=torch.float64) * bias_std + bias_mean)
            W = W0 if W is None else W
            b = b0 if b is None else b
        if len(W) != self.N + 1 or len(b) != self.N + 1:
            raise ValueError(f"W, b: expected lists of length N+1 = {self.N + 1} with index 0 unused")
        self.W: list[Optional[Tensor]] = [None]
        self.b: list[Optional[Tensor]] = [None]
        for k in range(1, self.N + 1):
            Wk = check_tensor(f"W[{k}]", W[k], shape=(self.sizes[k - 1], self.sizes[k]))
            bk = check_tensor(f"b[{k}]", b[k], shape=(self.sizes[k],))
            self.W.append(Wk.detach().to(device=device, dtype=dtype).clone())
            self.b.append(bk.detach().to(device=device, dtype=dtype).clone())

    # ------------------------------------------------------------------ basics
    @property
    def N(self) -> int:
        """Number of layers above the input."""
        return len(self.sizes) - 1

    @property
    def dtype(self) -> torch.dtype:
        return self.W[1].dtype

    @property
    def device(self) -> torch.device:
        return self.W[1].device

    def __repr__(self) -> str:
        return (
            f"LayeredEBM(sizes={self.sizes}, activation={self.activation.name!r}, "
            f"dtype={self.dtype}, device={self.device})"
        )

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> LayeredEBM:
        """A copy on another device and/or dtype."""
        return LayeredEBM(
            self.sizes,
            self.activation,
            W=self.W,
            b=self.b,
            dtype=dtype or self.dtype,
            device=device or self.device,
        )

    def clone(self) -> LayeredEBM:
        return self.to()

    def scaled(self, lam: float) -> LayeredEBM:
        """A copy with every weight multiplied by the coupling scale λ."""
        lam = check_real("lam", lam)
        net = self.clone()
        for k in range(1, self.N + 1):
            net.W[k].mul_(lam)
        return net

    def parameters(self) -> list[Tensor]:
        return [t for k in range(1, self.N + 1) for t in (self.W[k], self.b[k])]

    # ------------------------------------------------------------------ checks
    def check_input(self, x: object, name: str = "x") -> Tensor:
        return check_tensor(name, x, shape=(None, self.sizes[0]), dtype=self.dtype, device=self.device)

    def check_target(self, target: object, batch: int, name: str = "target") -> Tensor:
        return check_tensor(name, target, shape=(batch, self.sizes[-1]), dtype=self.dtype, device=self.device)

    def check_state(self, h: object, name: str = "h") -> State:
        """Check a state list ``[x, h_1, …, h_N]`` (batch-first)."""
        if not isinstance(h, (list, tuple)) or len(h) != self.N + 1:
            raise ValueError(f"{name}: expected a list [x, h_1, ..., h_N] of length {self.N + 1}")
        x = self.check_input(h[0], f"{name}[0]")
        B = x.shape[0]
        for k in range(1, self.N + 1):
            check_tensor(f"{name}[{k}]", h[k], shape=(B, self.sizes[k]), dtype=self.dtype, device=self.device)
        return list(h)

    def top_down(self, feedback: Optional[Feedback] = None) -> list:
        """The top-down weights ``[None, None, B_2, …, B_N]`` (checked); ``None`` means ``B = W``."""
        if feedback is None:
            return [None, None] + [self.W[k] for k in range(2, self.N + 1)]
        if not isinstance(feedback, (list, tuple)) or len(feedback) != self.N + 1:
            raise ValueError(f"feedback: expected a list of length N+1 = {self.N + 1} with indices 0 and 1 unused")
        return [None, None] + [
            check_tensor(f"feedback[{k}]", feedback[k], shape=tuple(self.W[k].shape), dtype=self.dtype,
                         device=self.device)
            for k in range(2, self.N + 1)
        ]

    # ------------------------------------------------------------------ states
    def init_state(self, x: Tensor, fill: float = 0.0) -> State:
        """The state ``[x, fill, …, fill]`` for a batch of inputs ``x``."""
        x = self.check_input(x)
        return [x] + [
            torch.full((x.shape[0], n), float(fill), dtype=self.dtype, device=self.device)
            for n in self.sizes[1:]
        ]

    def input_drive(self, x: Tensor) -> Tensor:
        """The constant bottom-up term of layer 1, ``b_1 + W_1ᵀ x`` (batch-first: ``x W_1 + b_1``)."""
        return _affine(self.b[1], x, self.W[1])

    # ------------------------------------------------------------------ energy
    def energy(self, h: State) -> Tensor:
        """E(h) per sample (shape = the leading dims of ``h[1]``); PAPER.md §2."""
        rho = self.activation.rho
        r_prev = h[0]
        E = 0.0
        for k in range(1, self.N + 1):
            r = rho(h[k])
            E = E + 0.5 * (h[k] * h[k]).sum(-1) - (r * self.b[k]).sum(-1) - ((r_prev @ self.W[k]) * r).sum(-1)
            r_prev = r
        return E

    def cost(self, h: State, target: Tensor) -> Tensor:
        """C = ½‖y − d‖² per sample."""
        diff = h[self.N] - target
        return 0.5 * (diff * diff).sum(-1)

    def total_energy(self, h: State, beta: float = 0.0, target: Optional[Tensor] = None) -> Tensor:
        """F = E + βC per sample."""
        F = self.energy(h)
        if beta != 0.0:
            F = F + beta * self.cost(h, target)
        return F

    def force(
        self,
        h: State,
        beta: float = 0.0,
        target: Optional[Tensor] = None,
        drive: Optional[Tensor] = None,
        feedback: Optional[Feedback] = None,
    ) -> State:
        """−∂F/∂h in closed form: ``f[k] = R_k(h) − h_k`` (+ β(d − y) on the output).

        R_k = ρ'(h_k) ⊙ (b_k + W_kᵀ ρ(h_{k−1}) + W_{k+1} ρ(h_{k+1})). ``f[0]`` is zero:
        the input is clamped. ``drive`` is the hoisted ``input_drive(x)``. With ``feedback``
        (top-down weights ``B``, see :func:`feedback_weights`) layer k hears layer k+1 through
        ``B_{k+1}`` instead of ``W_{k+1}``: a vector field that no energy has as its gradient
        unless ``B = W``.
        """
        if beta != 0.0 and target is None:
            raise ValueError("target: required when beta != 0")
        return self._force(h, beta, target, drive, self.top_down(feedback))

    def _force(self, h: State, beta: float, target: Optional[Tensor], drive: Optional[Tensor], down: list) -> State:
        """:meth:`force` without argument checks (``down`` from :meth:`top_down`)."""
        N = self.N
        act = self.activation
        rho: list[Tensor] = [h[0]]
        drho: list[Optional[Tensor]] = [None]
        for k in range(1, N + 1):
            r, dr = act.rho_and_drho(h[k])
            rho.append(r)
            drho.append(dr)
        f: State = [torch.zeros_like(h[0])]
        for k in range(1, N + 1):
            if k == 1:
                pre = drive if drive is not None else self.input_drive(h[0])
            else:
                pre = _affine(self.b[k], rho[k - 1], self.W[k])
            if k < N:
                pre = _affine(pre, rho[k + 1], down[k + 1].T)
            fk = drho[k] * pre - h[k]
            if k == N and beta != 0.0:
                fk = fk + beta * (target - h[k])
            f.append(fk)
        return f

    # ------------------------------------------------------------------ io
    def state_dict(self) -> dict[str, np.ndarray | str]:
        """Plain arrays ``W1…WN``, ``b1…bN`` and ``activation`` (for ``.npz`` files)."""
        out: dict[str, np.ndarray | str] = {"activation": self.activation.name, "sizes": np.array(self.sizes)}
        for k in range(1, self.N + 1):
            out[f"W{k}"] = self.W[k].detach().cpu().double().numpy()
            out[f"b{k}"] = self.b[k].detach().cpu().double().numpy()
        return out

    @classmethod
    def from_state_dict(cls, d: dict, dtype: torch.dtype = torch.float64, device: str = "cpu") -> LayeredEBM:
        sizes = [int(s) for s in np.asarray(d["sizes"])]
        N = len(sizes) - 1
        W = [None] + [torch.as_tensor(np.asarray(d[f"W{k}"])) for k in range(1, N + 1)]
        b = [None] + [torch.as_tensor(np.asarray(d[f"b{k}"])) for k in range(1, N + 1)]
        return cls(sizes, str(np.asarray(d["activation"])), W=W, b=b, dtype=dtype, device=device)

    def save_npz(self, path: str | Path, **extra: object) -> Path:
        """Write the weights, biases, activation and ``extra`` arrays to ``path`` atomically."""
        from .io import atomic_savez

        return atomic_savez(path, **self.state_dict(), **extra)

    @classmethod
    def load_npz(cls, path: str | Path, dtype: torch.dtype = torch.float64, device: str = "cpu") -> LayeredEBM:
        """The network written by :meth:`save_npz` (extra arrays are ignored)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"path: no saved network at {path}")
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("sizes", "activation", "W1", "b1") if k not in d.files]
            if missing:
                raise ValueError(f"path: {path} is not a saved network (missing {missing})")
            return cls.from_state_dict({k: d[k] for k in d.files}, dtype=dtype, device=device)


def feedback_weights(net: LayeredEBM, a: float, *, seed: int) -> Feedback:
    """Top-down weights with asymmetry ``a``: ``B_k = ‖W_k‖ M_k / ‖M_k‖``, ``M_k = (1 − a) W_k + a Q_k``.

    ``Q_k`` has i.i.d. standard normal entries (a generator seeded with ``seed``: the same ``Q`` for
    every ``a``) rescaled to ``‖Q_k‖ = ‖W_k‖`` (Frobenius). ``a = 0`` gives ``B = W`` (symmetric, an
    energy exists); ``a = 1`` random feedback of the same norm. Indexed like ``net.W``; ``B[0]`` and
    ``B[1]`` are ``None`` (the clamped input hears no top-down signal).
    """
    a = check_real("a", a)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"a: the asymmetry must lie in [0, 1], got {a}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an integer, got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(seed)
    B: Feedback = [None, None]
    for k in range(2, net.N + 1):
        W = net.W[k]
        Q = torch.randn(tuple(W.shape), generator=gen, dtype=torch.float64).to(device=W.device, dtype=W.dtype)
        nW = W.norm()
        Q = Q * (nW / Q.norm())
        M = (1.0 - a) * W + a * Q
        B.append(M * (nW / M.norm()) if float(M.norm()) > 0.0 else M)
    return B


def gamma_feedback(net: LayeredEBM, gamma: float) -> Feedback:
    """Xie & Seung's (2003) γ-scaled feedback: top-down weights ``B_k = γ W_k``.

    Layer k then hears layer k+1 through ``γ W_{k+1}``. The dynamics stay a gradient system: they
    descend ``E_γ = Σ_k γ^k [½‖h_k‖² − ρ(h_k)·(b_k + W_kᵀ ρ(h_{k−1}))]`` in the metric
    ``diag(γ^{−k})``, so fixed points are minima of an energy. As γ → 0 the fixed point tends to the
    feedforward pass (error O(γ)) and the response of layer k to a nudge of the output scales as
    ``γ^{N−k}`` times the feedforward network's back-propagated error. ``γ = 1`` is the book's model.
    """
    gamma = check_real("gamma", gamma)
    if not gamma > 0.0:
        raise ValueError(f"gamma: the feedback scale must be > 0, got {gamma}")
    return [None, None] + [gamma * net.W[k] for k in range(2, net.N + 1)]
