"""The fused minibatch program of Equilibrium Propagation behind :func:`ebmlib.train` (private).

One EP minibatch — gather the examples and their persistent free states, the input drive
``b_1 + xW_1`` (once, shared by every phase), ``free_steps`` free steps, ``nudged_steps`` nudged
steps (one phase with ±β, or two with +β and −β), the update

    W_k ← W_k + lr_k/(sβB) (ρ(h^β_{k−1})ᵀρ(h^β_k) − ρ(h*_{k−1})ᵀρ(h*_k)),   b_k ← b_k + lr_k/(sβB) Σ (ρ(h^β_k) − ρ(h*_k))

(PAPER.md §5: θ ← θ − lr (1/β)(∂E/∂θ(h^β) − ∂E/∂θ(h*)); symmetric EP: ρ(h^{+β}) and ρ(h^{−β}) with
1/(2β)), the scatter of the free states back and the count of errors — is one tuple of calls bound
once per training run on fixed buffers (:mod:`ebmlib._loop`'s workspace and step programs). Running a
minibatch is a loop over those calls: no argument handling, no allocation of operands, and no host
synchronisation: errors, cost and the largest |h| are accumulated on the device and read every
``check_every`` minibatches. On CUDA the program of each sign of β is captured once as a CUDA graph and
replayed. Held to :func:`ebmlib.train_step` by tests/test_trainloop.py (float64, to 1e-12).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Optional

import torch
from torch import Tensor

from . import _loop
from .checks import resolve_clip
from .estimators import Estimator, Phases
from .network import LayeredEBM

__all__ = ["FUSED", "FusedEP", "supports"]

# estimator name → whether its nudged phases are symmetric (+β and −β from the same free state)
FUSED = {"ep": False, "ep_symmetric": True}


def supports(estimator: Estimator, net: LayeredEBM) -> bool:
    """Whether ``estimator`` on ``net`` runs on the fused program (one-sided or symmetric EP)."""
    return estimator.name in FUSED and not estimator.updates_params and isinstance(net, LayeredEBM)


class FusedEP:
    """The bound EP minibatch program for one run: ``net``'s weights are updated in place.

    ``X``, ``D``, ``labels`` are the training inputs, one-hot targets and labels on ``net``'s device;
    ``persistent`` the per-example free states (updated in place) or None (free phases from zero).
    ``free_schedule``: "synchronous" (the paper's ε-steps) or "block" (alternate layers, each set to
    its exact minimiser given its neighbours, ``free_steps`` sweeps: only for the clipped hard sigmoid).
    """

    def __init__(self, net: LayeredEBM, estimator: Estimator, phases: Phases, lrs: tuple, batch: int,
                 X: Tensor, D: Tensor, labels: Tensor, persistent: Optional[list], *,
                 free_schedule: str = "synchronous", max_abs: float = 1e6, graphs: Optional[bool] = None):
        if not supports(estimator, net):
            raise ValueError(f"estimator: {estimator.name!r} has no fused program (supported: {sorted(FUSED)})")
        self.net, self.batch, self.symmetric = net, int(batch), FUSED[estimator.name]
        self.X, self.D, self.labels, self.persistent = X, D, labels, persistent
        dev, dt, N, act = net.device, net.dtype, net.N, net.activation
        clip = resolve_clip(phases.clip, act.clip_by_default)
        block = free_schedule == "block"
        if free_schedule not in ("synchronous", "block"):
            raise ValueError(f"free_schedule: expected 'synchronous' or 'block', got {free_schedule!r}")
        if block and not (act is _loop._HARD_SIGMOID and clip):
            raise ValueError("free_schedule: 'block' sets each layer to clip(pre_k), the exact minimiser of the "
                             "energy given its neighbours, only for the clipped hard sigmoid")
        # skinny bottom-up products run faster on column-major W_k (see _loop._Workspace): store W_k (k ≥ 2) so,
        # once, so that the workspace binds the live weights, which the update changes in place
        for k in range(2, N + 1):
            if not net.W[k].T.is_contiguous():
                net.W[k] = net.W[k].T.contiguous().T
        B = self.batch
        self.idx = torch.zeros(B, dtype=torch.long, device=dev)
        self.x = torch.empty(B, net.sizes[0], dtype=dt, device=dev)
        self.d = torch.empty(B, net.sizes[-1], dtype=dt, device=dev)
        self.lab = torch.empty(B, dtype=labels.dtype, device=dev)
        self.drive = torch.empty(B, net.sizes[1], dtype=dt, device=dev)
        ws = self.ws = _loop._Workspace(net, self.drive, 3)
        bounds = (act.lo, act.hi) if clip else None
        threads = _loop.loop_threads(net, B)

        # clipped hard sigmoid: every state the program sees is clipped to [0, 1] (the persistent states are
        # free states, or zeros), where ρ(h) = h and ρ'(h) = 1: steps skip both (_loop._Config.identity_rho)
        self.identity = act is _loop._HARD_SIGMOID and bounds is not None and bounds == (0.0, 1.0)

        def config(beta: float, target: Optional[Tensor], eps: float, schedule: str) -> _loop._Config:
            # target: β·d, or where ρ is the identity c_N + β·d (the output's constant with the nudge folded in)
            fold = self.identity and target is not None
            return _loop._Config(eps, beta, 0.0, bounds, None, max_abs, None if fold else target,
                                 schedule, ws, threads, identity_rho=self.identity, out_drive=target if fold else None)

        self.threads, self.max_abs = threads, max_abs
        buf = ws.H[0].new_empty
        self.F, self.RF, self.RN, self.Dl = (buf(ws.H[0].shape) for _ in range(4))
        self.bt_plus, self.bt_minus = torch.empty_like(self.d), torch.empty_like(self.d)
        self.free_cfg = config(0.0, None, 1.0 if block else phases.eps, "odd_even" if block else "synchronous")
        self.plus_cfg = config(phases.beta, self.bt_plus, phases.eps, "synchronous")
        self.minus_cfg = config(-phases.beta, self.bt_minus, phases.eps, "synchronous")
        self.ones = torch.ones(B, dtype=dt, device=dev)  # b_k += a·D_kᵀ1: the batch sum and the update in one call
        self.amax = torch.empty(B, dtype=torch.long, device=dev)
        self.wrong_b = torch.empty(B, dtype=torch.bool, device=dev)
        self.resid = torch.empty_like(self.d)
        self.wrong = torch.zeros((), dtype=torch.long, device=dev)
        self.cost = torch.zeros((), dtype=dt, device=dev)
        self.big = torch.zeros((), dtype=dt, device=dev)
        self.phases, self.lrs = phases, tuple(float(v) for v in lrs)
        self.random_sign = phases.random_sign and not self.symmetric
        self.programs = {s: self._program(s) for s in ((1.0, -1.0) if self.random_sign else (1.0,))}
        self.graphs: dict = {}
        self.use_graphs = (dev.type == "cuda") if graphs is None else bool(graphs)
        if self.use_graphs and dev.type != "cuda":
            raise ValueError("graphs: CUDA graphs need a CUDA device")

    # ------------------------------------------------------------------ the program
    def _program(self, sign: float) -> tuple:
        """The calls of one minibatch with β of sign ``sign`` (one-sided) or ±β (symmetric), in order."""
        return tuple(call for _, calls in self.segments(sign) for call in calls)

    def segments(self, sign: float) -> list:
        """The program as named parts, in order: ``free`` (gather, the drive, the free steps), ``bookkeeping``
        (scatter of the free states, errors and cost), ``nudged`` (the nudged phases), ``update``."""
        net, ws, ph, N, B = self.net, self.ws, self.phases, self.net.N, self.batch
        free: list[Callable[[], object]] = [
            partial(torch.index_select, self.X, 0, self.idx, out=self.x),
            partial(torch.index_select, self.D, 0, self.idx, out=self.d),
        ]
        if self.persistent is None:  # errors counted per minibatch (else once per epoch: epoch_stats)
            free.append(partial(torch.index_select, self.labels, 0, self.idx, out=self.lab))
        if self.persistent is not None:
            free += [partial(torch.index_select, p, 0, self.idx, out=ws.Hv[0][k])
                     for k, p in enumerate(self.persistent, start=1)]
        else:
            free.append(ws.H[0].zero_)
        free.append(partial(torch.addmm, net.b[1], self.x, net.W[1], out=self.drive))  # the drive, once
        calls, _, j = _loop._chunk(net, self.free_cfg, 0, ph.free_steps)
        free += [*calls, partial(self.F.copy_, ws.H[j])]
        rho_free = self.F  # ρ(h*) for the update: the free state itself where ρ is the identity
        if not self.symmetric and not self.identity:
            free.append(_loop._rho_into(net.activation, self.F, self.RF))
            rho_free = self.RF
        Fv = ws.views(self.F)
        book: list[Callable[[], object]] = []
        if self.persistent is not None:
            book += [partial(p.index_copy_, 0, self.idx, Fv[k]) for k, p in enumerate(self.persistent, start=1)]
        else:
            y = Fv[N]  # the prediction at the free state, the cost ½‖y − d‖² against the target
            book += [partial(torch.argmax, y, 1, out=self.amax),
                     partial(torch.ne, self.amax, self.lab, out=self.wrong_b),
                     lambda: self.wrong.add_(self.wrong_b.sum()), partial(torch.sub, y, self.d, out=self.resid),
                     lambda: self.cost.add_(self.resid.square().sum(), alpha=0.5)]
        if self.symmetric:  # ρ(h^{+β}) into RF (kept: the minus phase reuses the ring), ρ(h^{−β}); 1/(2β)
            nudged, rho_plus = self._nudged(self.plus_cfg, self.bt_plus, ph.beta, j, out=self.RF, keep=True)
            nudged += [partial(ws.H[j].copy_, self.F)]
            calls, rho_minus = self._nudged(self.minus_cfg, self.bt_minus, -ph.beta, j, out=self.RN)
            update = self._update(plus=rho_plus, minus=rho_minus, coef=1.0 / (2.0 * ph.beta * B))
            nudged += calls
        else:  # ρ(h^β); coefficient 1/(sβ)
            cfg, bt = (self.plus_cfg, self.bt_plus) if sign > 0 else (self.minus_cfg, self.bt_minus)
            nudged, rho_nudged = self._nudged(cfg, bt, sign * ph.beta, j, out=self.RN)
            update = self._update(plus=rho_nudged, minus=rho_free, coef=1.0 / (sign * ph.beta * B))
        return [("free", free), ("bookkeeping", book), ("nudged", nudged), ("update", update)]

    def split(self, batches: list, signs: list) -> dict:
        """Seconds spent in each part of the program (:meth:`segments`) over the minibatches ``batches``
        (index tensors) with β signs ``signs``, each part timed alone; the weights move as in training. On
        CUDA each part is a CUDA graph of its own, replayed ``len(batches)`` times. Returns ``{part: seconds}``
        and ``calls`` (per minibatch)."""
        import time

        out: dict = {}
        segs = {s: self.segments(s) for s in set(signs)}
        if self.use_graphs:
            graphs = [(name, self._capture(calls)) for name, calls in segs[signs[0]]]
            for name, g in graphs:
                torch.cuda.synchronize(self.net.device)
                t0 = time.perf_counter()
                for _ in batches:
                    g.replay()
                torch.cuda.synchronize(self.net.device)
                out[name] = time.perf_counter() - t0
        else:
            with _loop.intra_op_threads(self.threads):
                for idx, s in zip(batches, signs):
                    self.idx.copy_(idx)
                    for name, calls in segs[s]:
                        t0 = time.perf_counter()
                        for call in calls:
                            call()
                        out[name] = out.get(name, 0.0) + time.perf_counter() - t0
        out["calls"] = sum(len(c) for _, c in segs[signs[0]])
        return out

    def _nudged(self, cfg: _loop._Config, bt: Tensor, beta: float, j: int, *, out: Tensor,
                keep: bool = False) -> tuple[list, Tensor]:
        """β·d into ``bt`` (c_N + β·d where ρ is the identity: c_N = b_N, or the drive when N = 1), then
        ``nudged_steps`` steps from state buffer ``j``; returns the calls and the tensor that holds ρ of the result
        after them: ``out`` (or the state itself where ρ is the identity, unless ``keep``). Where states are not
        clipped, the largest |h| of the nudged state is accumulated (divergence)."""
        calls, _, j2 = _loop._chunk(self.net, cfg, j, self.phases.nudged_steps)
        h = self.ws.H[j2]
        c_N = self.ws.plan[self.net.N][0]  # the output's constant: b_N, or the drive when N = 1
        nudge = partial(torch.add, c_N, self.d, alpha=beta, out=bt) if self.identity else \
            partial(torch.mul, self.d, beta, out=bt)
        ops = [nudge, *calls]
        if not self.identity:
            ops += [_loop._rho_into(self.net.activation, h, out),
                    lambda: torch.maximum(self.big, _loop._max_abs(h), out=self.big)]
            return ops, out
        if keep:
            return ops + [partial(out.copy_, h)], out
        return ops, h

    def _update(self, *, plus: Tensor, minus: Tensor, coef: float) -> list:
        """``W_k += lr_k·coef (ρ⁺_{k−1}ᵀρ⁺_k − ρ⁻_{k−1}ᵀρ⁻_k)``, ``b_k += lr_k·coef Σ_batch (ρ⁺_k − ρ⁻_k)``
        with ρ^±_0 = x (so W_1 takes one product of the difference)."""
        net, ws = self.net, self.ws
        P, M, Dv = ws.views(plus), ws.views(minus), ws.views(self.Dl)
        ops: list = [partial(torch.sub, plus, minus, out=self.Dl)]
        for k in range(1, net.N + 1):
            a = self.lrs[k - 1] * coef
            if k == 1:
                ops.append(partial(net.W[1].addmm_, self.x.T, Dv[1], alpha=a))
            else:
                ops += [partial(net.W[k].addmm_, P[k - 1].T, P[k], alpha=a),
                        partial(net.W[k].addmm_, M[k - 1].T, M[k], alpha=-a)]
            ops.append(partial(net.b[k].addmv_, Dv[k].T, self.ones, alpha=a))
        return ops

    # ------------------------------------------------------------------ running
    def _state(self) -> list:
        return [*self.net.parameters(), *(self.persistent or []), self.wrong, self.cost, self.big]

    def _capture(self, calls: tuple) -> torch.cuda.CUDAGraph:
        """``calls`` as a CUDA graph: one warm-up run of the whole program on a side stream (its effects undone),
        then capture (which runs nothing)."""
        dev = self.net.device
        saved = [t.clone() for t in self._state()]
        stream = torch.cuda.Stream(device=dev)
        stream.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(stream):
            for call in self.programs[next(iter(self.programs))]:
                call()
        torch.cuda.current_stream(dev).wait_stream(stream)
        for t, s in zip(self._state(), saved):
            t.copy_(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for call in calls:
                call()
        return g

    def run(self, idx: Tensor, sign: float = 1.0) -> None:
        """One minibatch of the examples ``idx`` (``batch`` of them) with β of sign ``sign``."""
        self.idx.copy_(idx)
        if self.use_graphs:
            g = self.graphs.get(sign)
            if g is None:
                g = self.graphs[sign] = self._capture(self.programs[sign])
            g.replay()
            return
        for call in self.programs[sign]:  # (the caller holds threads_context())
            call()

    def threads_context(self):
        """The intra-op thread setting of the program's loop (:func:`ebmlib._loop.loop_threads`), for an epoch."""
        return _loop.intra_op_threads(self.threads)

    def read(self) -> tuple[int, float, float]:
        """(errors, summed cost, largest |h|) since the last read, then reset (one sync). The errors and cost
        are those of minibatches without persistent states (else :meth:`epoch_stats`); |h| is that of the nudged
        states, or, on the clipped hard sigmoid (states in [0, 1]: a NaN is all that can go wrong), of the last free
        state."""
        big = _loop._max_abs(self.F) if self.identity else self.big
        w, c, b = torch.stack([self.wrong.to(self.cost.dtype), self.cost, big]).tolist()
        self.wrong.zero_()
        self.cost.zero_()
        self.big.zero_()
        return int(w), c, b

    def epoch_stats(self) -> tuple[int, float]:
        """With persistent states, after an epoch: (errors, summed cost ½‖y − d‖²) of the free outputs it made —
        each example's persistent state is the free state of its minibatch in this epoch (one sync)."""
        if self.persistent is None:
            raise ValueError("persistent: epoch_stats needs the persistent free states")
        y = self.persistent[-1]
        w, c = torch.stack([(y.argmax(1) != self.labels).sum().to(y.dtype),
                            0.5 * (y - self.D).square().sum()]).tolist()
        return int(w), c
