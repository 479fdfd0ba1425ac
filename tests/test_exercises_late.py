"""The scaffolded exercises of chapters 06–11: each check accepts the solution, rejects a plausible
wrong answer and a blank (None), and names the argument it refuses."""

import numpy as np
import pytest
import torch

import ebmlib as eb
from ebmlib.exercises import Verdict
from ebmlib.exercises.ch06 import check_step_response
from ebmlib.exercises.ch07 import check_first_arrival_signal
from ebmlib.exercises.ch08 import check_reach_steps
from ebmlib.exercises.ch09 import check_chain_gradient
from ebmlib.exercises.ch10 import check_window
from ebmlib.exercises.ch11 import check_paired_interval


@pytest.fixture(scope="module")
def prob():
    return eb.random_problem([5, 6, 6, 3], "sigmoid", seed=0, generator=torch.Generator().manual_seed(0), batch=4,
                             gain=2.0, bias_std=0.3)


def _blank_and_type(verdict: Verdict, ok: bool) -> None:
    assert isinstance(verdict, Verdict) and bool(verdict) is ok
    assert str(verdict).startswith("Correct" if ok else "Not yet")


def test_ch06_step_response(prob):
    net, h, d = prob.net, prob.fixed_point.h, prob.target
    steps, eps, beta, k = 6, 0.5, 1e-3, 1
    nudged = eb.run(net, h, steps=steps, eps=eps, beta=beta, target=d).h[k]
    free = eb.run(net, h, steps=steps, eps=eps).h[k]
    delta = nudged - free
    kw = dict(steps=steps, eps=eps, beta=beta, layer=k)
    _blank_and_type(check_step_response((delta[1:] - delta[:-1]) / beta, net, h, d, **kw), True)
    _blank_and_type(check_step_response(delta[1:] / beta, net, h, d, **kw), False)   # δ_t, not its step
    _blank_and_type(check_step_response(delta[1:] - delta[:-1], net, h, d, **kw), False)  # not divided by β
    _blank_and_type(check_step_response(None, net, h, d, **kw), False)
    with pytest.raises(TypeError, match="net"):
        check_step_response(None, "net", h, d, **kw)
    with pytest.raises(ValueError, match="layer"):
        check_step_response(None, net, h, d, **{**kw, "layer": net.N + 1})
    with pytest.raises(ValueError, match="beta"):
        check_step_response(None, net, h, d, **{**kw, "beta": 0.0})


def test_ch07_first_arrival_signal(prob):
    net, h, d = prob.net, prob.fixed_point.h, prob.target
    eps, beta, k = 0.5, 1e-4, 1
    m = net.N - k
    delta = eb.nudge_response(net, h, steps=m + 1, eps=eps, beta=beta, target=d)[k]
    kw = dict(eps=eps, beta=beta, layer=k)
    _blank_and_type(check_first_arrival_signal(-delta[m + 1] / (beta * eps ** (m + 1)), net, h, d, **kw), True)
    _blank_and_type(check_first_arrival_signal(-delta[m + 1] / (beta * eps ** m), net, h, d, **kw), False)
    _blank_and_type(check_first_arrival_signal(-delta[m] / (beta * eps ** (m + 1)), net, h, d, **kw), False)
    _blank_and_type(check_first_arrival_signal(None, net, h, d, **kw), False)
    with pytest.raises(TypeError, match="h_free"):
        check_first_arrival_signal(None, net, h[1], d, **kw)
    with pytest.raises(ValueError, match="eps"):
        check_first_arrival_signal(None, net, h, d, **{**kw, "eps": -1.0})


def test_ch08_reach_steps():
    _blank_and_type(check_reach_steps([3, 2, 2, 1, 1], 5, "odd_even"), True)
    _blank_and_type(check_reach_steps([5, 4, 3, 2, 1], 5, "odd_even"), False)   # the synchronous answer
    _blank_and_type(check_reach_steps([1, 1, 1, 1, 1], 5, "top_down"), True)
    _blank_and_type(check_reach_steps([1, 1, 1], 5, "top_down"), False)
    _blank_and_type(check_reach_steps(None, 5, "top_down"), False)
    with pytest.raises(ValueError, match="schedule"):
        check_reach_steps([1], 1, "sideways")
    with pytest.raises(ValueError, match="N"):
        check_reach_steps([1], 0, "synchronous")


def test_ch09_chain_gradient(prob):
    net, h, d = prob.net, prob.fixed_point.h, prob.target
    g = h[net.N] - d
    for j in range(net.N - 1, 0, -1):   # g_j = ρ'(h_j) ⊙ ((ρ'(h_{j+1}) ⊙ g_{j+1}) W_{j+1}ᵀ)
        g = net.activation.drho(h[j]) * ((net.activation.drho(h[j + 1]) * g) @ net.W[j + 1].T)
    _blank_and_type(check_chain_gradient(g, net, h, d, layer=1), True)
    wrong = h[net.N] - d
    for j in range(net.N - 1, 0, -1):   # forgot ρ'(h_{j+1})
        wrong = net.activation.drho(h[j]) * (wrong @ net.W[j + 1].T)
    _blank_and_type(check_chain_gradient(wrong, net, h, d, layer=1), False)
    _blank_and_type(check_chain_gradient(None, net, h, d, layer=1), False)
    with pytest.raises(TypeError, match="target"):
        check_chain_gradient(None, net, h, d.tolist(), layer=1)
    with pytest.raises(ValueError, match="layer"):
        check_chain_gradient(None, net, h, d, layer=0)


def test_ch10_window():
    neuron, rule = eb.SpikingNeuron(), eb.TraceRule(10.0, 20.0)
    lags = np.arange(-30, 31)
    qp, qm, norm = 1 - 1 / 10.0, 1 - 1 / 20.0, 30.0
    k = np.where(lags >= 1, (1 - qp) * qp ** (lags - 1.0), 0.0) - np.where(lags <= -1, (1 - qm) * qm ** (-lags - 1.0),
                                                                          0.0)
    _blank_and_type(check_window(neuron.ap_area * k / norm, lags, neuron, rule), True)
    _blank_and_type(check_window(neuron.ap_area * k, lags, neuron, rule), False)      # no 1/(τ₊ + τ₋)
    _blank_and_type(check_window(neuron.ap_area * k[::-1] / norm, lags, neuron, rule), False)   # Δt reversed
    _blank_and_type(check_window(None, lags, neuron, rule), False)
    with pytest.raises(ValueError, match="lags"):
        check_window(None, [0.5, 1.5], neuron, rule)
    with pytest.raises(TypeError, match="rule"):
        check_window(None, lags, neuron, eb.CentredRule(5))
    with pytest.raises(TypeError, match="neuron"):
        check_window(None, lags, "neuron", rule)


def test_ch11_paired_interval():
    a, b = [0.12, 0.15, 0.11, 0.14], [0.10, 0.12, 0.10, 0.13]
    diff = np.array(a) - np.array(b)
    half = eb.t_quantile(0.99, 3) * diff.std(ddof=1) / np.sqrt(4)
    _blank_and_type(check_paired_interval((diff.mean() - half, diff.mean() + half), a, b, 0.99), True)
    unpaired = eb.t_quantile(0.99, 3) * np.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 4)
    _blank_and_type(check_paired_interval((diff.mean() - unpaired, diff.mean() + unpaired), a, b, 0.99), False)
    half0 = eb.t_quantile(0.99, 3) * diff.std(ddof=0) / np.sqrt(4)   # standard deviation with n, not n - 1
    _blank_and_type(check_paired_interval((diff.mean() - half0, diff.mean() + half0), a, b, 0.99), False)
    _blank_and_type(check_paired_interval(None, a, b, 0.99), False)
    _blank_and_type(check_paired_interval("lo, hi", a, b, 0.99), False)
    with pytest.raises(ValueError, match="level"):
        check_paired_interval(None, a, b, 99)
    with pytest.raises(ValueError, match="a, b"):
        check_paired_interval(None, a, b[:3], 0.99)
    with pytest.raises(ValueError, match="b"):
        check_paired_interval(None, a, [0.1], 0.99)
