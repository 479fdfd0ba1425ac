"""Spiking units, the trace rule and the spike-timing window (ebmlib/spiking.py, chapter 10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import ebmlib as eb

f64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def silent(**kw) -> eb.SpikingNeuron:
    """A unit that never fires by itself (rho(-40) ~ 4e-18), no noise."""
    return eb.SpikingNeuron(**{"tau_m": 20.0, "u_rest": -40.0, "p_max": 0.1, "ap_area": 2.0, **kw})


# ---------------------------------------------------------------- spike statistics at stationarity
def test_spike_rate_at_a_constant_potential_is_p_max_rho():
    neuron = eb.SpikingNeuron(u_rest=-1.0, p_max=0.2, noise_std=0.0)
    T, B = 2000, 400
    res = eb.simulate_unit(neuron, torch.zeros(1, dtype=f64), steps=T, batch_shape=(B,), generator=gen(1))
    p = 0.2 * float(torch.sigmoid(torch.tensor(-1.0, dtype=f64)))
    rate = float(res.post_count.sum()) / (T * B)
    assert abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / (T * B))


def test_spike_rate_under_noise_is_the_mean_of_rho_over_the_stationary_law():
    neuron = eb.SpikingNeuron(tau_m=10.0, u_rest=-2.0, p_max=0.2, noise_std=0.4)
    T, B = 1000, 2000
    u0 = neuron.u_rest + neuron.stationary_std() * torch.randn(B, generator=gen(2), dtype=f64)
    res = eb.simulate_unit(neuron, torch.zeros(1, dtype=f64), steps=T, batch_shape=(B,), generator=gen(3), u0=u0)
    z, w = np.polynomial.hermite_e.hermegauss(60)
    s = neuron.stationary_std()
    expected = 0.2 * float((w * (1 / (1 + np.exp(-(neuron.u_rest + s * z))))).sum() / w.sum())
    per_trial = res.post_count / T
    se = float(per_trial.std()) / math.sqrt(B)
    assert abs(float(per_trial.mean()) - expected) <= 4 * se
    # and it differs from rho at the mean potential (Jensen), which the test can resolve
    assert abs(0.2 * float(torch.sigmoid(torch.tensor(neuron.u_rest))) - expected) > 8 * se


def test_mean_potential_with_a_reset_obeys_the_linear_balance():
    """E[u] = u_rest − (τ_m/dt) a E[S] at stationarity: the update of u is linear in the spikes."""
    neuron = eb.SpikingNeuron(tau_m=10.0, u_rest=0.0, p_max=0.3, reset=0.5, noise_std=0.3)
    T, B, burn = 1500, 300, 300
    res = eb.simulate_unit(neuron, torch.zeros(1, dtype=f64), steps=T, batch_shape=(B,), generator=gen(4), record=True)
    u = res.u[burn:]
    rate = res.spikes[burn:].mean(0)                 # per trial
    balance = neuron.u_rest - neuron.tau_m * neuron.reset * rate
    diff = u.mean(0) - balance                       # per trial, zero in expectation
    assert abs(float(diff.mean())) <= 4 * float(diff.std()) / math.sqrt(B)
    assert float(u.mean()) < neuron.u_rest - 0.3     # the reset lowers the potential


# ---------------------------------------------------------------- the window, by hand
def test_pairing_window_of_the_trace_rule_on_a_case_computed_by_hand():
    # tau_+ = 2, tau_- = 4: q_+ = 1/2, q_- = 3/4, norm 6; A = 2; no PSP (weight 0), no spontaneous spikes.
    # W(+1) = A (1 - q+) / 6 = 1/6, W(+3) = A (1 - q+) q+^2 / 6 = 1/24,
    # W(-1) = -A (1 - q-) / 6 = -1/12, W(-3) = -A (1 - q-) q-^2 / 6 = -3/64, W(0) = 0.
    pw = eb.pairing_protocol(silent(), eb.TraceRule(2.0, 4.0), [-3, -1, 0, 1, 3], trials=2, weight=0.0,
                             generator=gen(5))
    np.testing.assert_allclose(pw.window(), [-3 / 64, -1 / 12, 0.0, 1 / 6, 1 / 24], rtol=0, atol=1e-12)
    assert pw.window()[3] > 0 > pw.window()[1]       # potentiation when post follows pre, depression before


def test_pairing_window_of_the_centred_rule_on_a_case_computed_by_hand():
    # (V(t+2) - V(t-2)) / 4 with V = u + 2 S: the evoked spike counts +2/4 at dt = +2, -2/4 at dt = -2.
    pw = eb.pairing_protocol(silent(), eb.CentredRule(2), [-3, -2, -1, 0, 1, 2, 3], trials=2, weight=0.0,
                             generator=gen(6))
    np.testing.assert_allclose(pw.window(), [0, -0.5, 0, 0, 0, 0.5, 0], rtol=0, atol=1e-12)


def test_window_prediction_with_reset_is_exact_without_spontaneous_spikes():
    neuron = silent(reset=1.5, ap_area=5.0)
    rule = eb.TraceRule(3.0, 7.0)
    lags = np.arange(-30, 31)
    pw = eb.pairing_protocol(neuron, rule, lags, trials=2, weight=0.7, generator=gen(7))
    np.testing.assert_allclose(pw.window(), eb.window_prediction(lags, neuron, rule), rtol=0, atol=1e-10)
    assert pw.window()[lags == -25][0] > 0           # the reset's recovery potentiates at long post-before-pre delays


def test_window_kernel_is_a_derivative_kernel():
    rule = eb.TraceRule(5.0, 12.0)
    lags = np.arange(-3000, 3001)
    K = eb.window_kernel(lags, rule)
    assert abs(K.sum()) < 1e-12
    assert abs((lags * K).sum() - 1.0) < 1e-12
    assert K[lags == 1][0] / -K[lags == -1][0] == pytest.approx(12.0 / 5.0)
    Kc = eb.window_kernel(np.arange(-5, 6), eb.CentredRule(3))
    assert Kc.sum() == 0 and (np.arange(-5, 6) * Kc).sum() == pytest.approx(1.0)


def test_pairing_window_matches_the_closed_form_with_noise_and_spontaneous_spikes():
    neuron = eb.SpikingNeuron(tau_m=20.0, u_rest=-3.0, p_max=0.1, ap_area=40.0, noise_std=0.3)
    rule = eb.TraceRule(5.0, 10.0)
    lags = np.arange(-20, 21, 4)
    pw = eb.pairing_protocol(neuron, rule, lags, trials=600, weight=0.5, generator=gen(8))
    z = (pw.window() - eb.window_prediction(lags, neuron, rule)) / pw.se()
    assert np.abs(z).max() < 4.0
    tau, se = pw.jackknife(lambda w: w[lags == 4][0] / w[lags == 8][0])
    assert abs(tau - math.exp(4 / (-1 / math.log(1 - 1 / 5.0)))) < 4 * se


# ---------------------------------------------------------------- the rule, online and offline
@pytest.mark.parametrize("rule", [eb.TraceRule(3.0, 6.0), eb.CentredRule(4)], ids=["trace", "centred"])
def test_online_rule_equals_the_offline_sum(rule):
    neuron = eb.SpikingNeuron(tau_m=10.0, u_rest=-1.0, p_max=0.3, ap_area=3.0, noise_std=0.2, reset=0.4)
    T, B, n = 120, 5, 3
    w = torch.tensor([0.3, -0.2, 0.5], dtype=f64)
    p = torch.full((T, 1, n), 0.1, dtype=f64)
    u0 = torch.linspace(-1.5, -0.5, B, dtype=f64)
    res = eb.simulate_unit(neuron, w, steps=T, batch_shape=(B,), generator=gen(9), pre_prob=p, rule=rule, u0=u0,
                           record=True)
    torch.testing.assert_close(res.dw, eb.spike_rule(res.pre, res.V, rule, v0=u0), rtol=1e-12, atol=1e-12)
    win = eb.simulate_unit(neuron, w, steps=T, batch_shape=(B,), generator=gen(9), pre_prob=p, rule=rule, u0=u0,
                           record=True, rule_window=(30, 70))
    gated = win.pre.clone()
    gated[:30], gated[70:] = 0.0, 0.0
    torch.testing.assert_close(win.dw, eb.spike_rule(gated, win.V, rule, v0=u0), rtol=1e-12, atol=1e-12)


def test_trace_derivative_is_exact_for_a_linear_potential():
    t = torch.arange(200, dtype=f64)
    V = (2.0 - 0.3 * t).unsqueeze(1)
    D = eb.trace_derivative(V, eb.TraceRule(2.0, 3.0), v0=V[0] + 0.3 * 3.0)   # history continues the line
    assert float((D[:120] + 0.3).abs().max()) < 1e-9


# ---------------------------------------------------------------- spikes back to rates
def test_spike_rule_mean_matches_simulation_and_needs_its_hebbian_term():
    neuron = eb.SpikingNeuron(tau_m=20.0, u_rest=-2.0, p_max=0.1, ap_area=40.0)
    rule = eb.TraceRule(10.0, 20.0)
    S, M, n, T = 8, 96, 10, 400
    g = gen(10)
    p = eb.random_rates(T, (S, n), tau_c=50.0, lo=0.002, hi=0.05, generator=g)
    push = 0.1 * eb.ou_process(T, (S,), tau_c=50.0, generator=g)
    w = 0.3 * torch.rand(n, generator=g, dtype=f64)
    win = (100, T - rule.tail())
    res = eb.simulate_unit(neuron, w, steps=T, batch_shape=(S, M), generator=g, pre_prob=p.unsqueeze(2),
                           drive=push.unsqueeze(2), rule=rule, rule_window=win)
    mean, se = res.dw.mean(1), res.dw.std(1) / math.sqrt(M)
    pred = eb.spike_rule_mean(neuron, rule, p, w, win, drive=push)
    z = (mean - pred) / se
    assert float((z ** 2).mean()) < 1.6 and abs(float(z.mean())) < 1.0
    u = eb.rate_unit(neuron, p, w, drive=push)
    no_hebb = eb.rate_rule(p, u + neuron.ap_area * neuron.p_max * neuron.activation.rho(u), rule, win)
    assert float((((mean - no_hebb) / se) ** 2).mean()) > 4.0


def test_rate_rule_and_random_rates_are_well_formed():
    g = gen(11)
    p = eb.random_rates(300, (4, 6), tau_c=20.0, lo=0.01, hi=0.04, generator=g)
    assert p.shape == (300, 4, 6) and float(p.min()) >= 0.01 and float(p.max()) <= 0.04
    z = eb.ou_process(20000, (2,), tau_c=10.0, generator=g)
    assert abs(float(z.var()) - 1.0) < 0.15
    lag1 = float((z[1:] * z[:-1]).mean() / (z * z).mean())
    assert abs(lag1 - 0.9) < 0.02


# ---------------------------------------------------------------- the network
def small_problem(seed=0):
    prob = eb.random_problem([4, 6, 3], "sigmoid", seed=seed, generator=gen(seed), batch=1, gain=2.0, bias_std=0.5,
                             eps=0.5, tol=1e-13)
    return prob.net, prob.x, prob.target, prob.h_star


def net_run(beta, trials, seed, population=256):
    net, x, d, hs = small_problem()
    return eb.spiking_network(net, x, hs, trials=trials, eps=0.2, beta=beta, target=d, burn=80, window=30,
                              population=population, p_max=0.5, ap_area=4.0, rule=eb.TraceRule(2.0, 4.0),
                              generator=gen(seed))


def test_network_update_follows_the_rate_rule_and_is_null_without_a_nudge():
    net, x, d, hs = small_problem()
    spk = net_run(1.0, 512, 12)
    rule = eb.TraceRule(2.0, 4.0)
    traj = eb.run(net, hs, steps=30 + rule.tail(), eps=0.2, beta=1.0, target=d)
    rho = net.activation.rho
    for k in range(1, net.N + 1):   # the hidden layer hears the nudge only through the top-down weights
        pre = 0.5 * (x.expand(traj.h[1].shape[0], -1).clone() if k == 1 else rho(traj.h[k - 1][:, 0]))
        pre[30:] = 0.0
        rate = eb.spike_rule(pre, traj.h[k][:, 0] + 2.0 * rho(traj.h[k][:, 0]), rule)
        assert eb.cosine(spk.update()[k].mean(0), rate) > 0.99
    free = net_run(0.0, 512, 13).update()
    for k in range(1, net.N + 1):
        m = free[k].mean(0)
        se = free[k].std(0) / math.sqrt(512)
        assert float(((m / se) ** 2).mean()) < 2.0     # zero mean: the two windows see the same stationary law


def test_noise_of_trial_means_falls_as_one_over_sqrt_m():
    spk = net_run(1.0, 1024, 14, population=16)
    X = spk.update()[1].reshape(1024, -1)
    ms = [1, 4, 16, 64]
    noise = [eb.group_snr(X, m)[2] for m in ms]
    assert abs(eb.loglog_slope(ms, noise) + 0.5) < 0.08


def test_group_and_predicted_cosines_agree_for_gaussian_trials():
    g = gen(15)
    n, K = 12, 4096
    mu = torch.randn(n, generator=g, dtype=f64) * 0.2
    A = torch.randn(n, n, generator=g, dtype=f64)
    cov = A @ A.T / n
    X = mu + torch.randn(K, n, generator=g, dtype=f64) @ torch.linalg.cholesky(cov).T
    d = mu + 0.05 * torch.randn(n, generator=g, dtype=f64)
    ms = [1, 4, 16, 64]
    meas, _ = eb.group_cosines(X, d, ms)
    pred, sd = eb.predicted_cosines(mu, cov, d, ms, draws=20000, generator=g)
    R = np.array([K // m for m in ms])
    assert np.all(np.abs(meas - pred) < 4 * sd * np.sqrt(1 / R + 1 / 20000))
    r, lo, hi, se = eb.bootstrap_correlation(X[:64].reshape(8, 8, n)[..., 0], X[:64].reshape(8, 8, n)[..., 1],
                                             resamples=200, generator=g)
    assert lo <= r <= hi and se > 0


def test_fit_decay_recovers_an_exponential():
    x = np.arange(0, 40)
    C, tau = eb.fit_decay(x, 3.0 * np.exp(-x / 7.0))
    assert tau == pytest.approx(7.0, rel=1e-6) and C == pytest.approx(3.0, rel=1e-6)


# ---------------------------------------------------------------- determinism
def test_same_generator_same_results_different_seed_different_results():
    neuron = eb.SpikingNeuron(noise_std=0.3)
    rule = eb.TraceRule(10.0, 20.0)
    a = eb.pairing_protocol(neuron, rule, [-5, 5], trials=50, weight=0.5, generator=gen(16))
    b = eb.pairing_protocol(neuron, rule, [-5, 5], trials=50, weight=0.5, generator=gen(16))
    c = eb.pairing_protocol(neuron, rule, [-5, 5], trials=50, weight=0.5, generator=gen(17))
    assert torch.equal(a.values, b.values) and torch.equal(a.control, b.control)
    assert not torch.equal(a.values, c.values)
    s1, s2 = net_run(1.0, 8, 18).update(), net_run(1.0, 8, 18).update()
    assert all(torch.equal(s1[k], s2[k]) for k in range(1, 3))


# ---------------------------------------------------------------- argument validation
def test_arguments_are_validated_by_name():
    w = torch.zeros(1, dtype=f64)
    n = eb.SpikingNeuron()
    cases = [
        (lambda: eb.SpikingNeuron(tau_m=0.5), ValueError, "tau_m"),
        (lambda: eb.SpikingNeuron(p_max=1.5), ValueError, "p_max"),
        (lambda: eb.SpikingNeuron(reset=-1.0), ValueError, "reset"),
        (lambda: eb.SpikingNeuron(activation="tanh"), ValueError, "activation"),
        (lambda: eb.SpikingNeuron(noise_std=float("nan")), ValueError, "noise_std"),
        (lambda: eb.TraceRule(tau_plus=0.5), ValueError, "tau_plus"),
        (lambda: eb.CentredRule(0), ValueError, "span"),
        (lambda: eb.simulate_unit(n, w.long(), steps=5, batch_shape=(2,), generator=gen()), TypeError, "weights"),
        (lambda: eb.simulate_unit(n, w, steps=0, batch_shape=(2,), generator=gen()), ValueError, "steps"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=1), TypeError, "generator"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=[2], generator=gen()), ValueError, "batch_shape"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(),
                                  pre_prob=torch.full((5, 2, 1), 1.5, dtype=f64)), ValueError, "pre_prob"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(),
                                  pre_prob=torch.full((5, 2, 1), float("nan"), dtype=f64)), ValueError, "pre_prob"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(),
                                  forced_post_at=torch.zeros(2)), TypeError, "forced_post_at"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(),
                                  rule=eb.TraceRule(10.0, 20.0, dt=0.5)), ValueError, "rule"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(), rule=eb.TraceRule(),
                                  rule_window=(3, 9)), ValueError, "rule_window"),
        (lambda: eb.simulate_unit(n, w, steps=5, batch_shape=(2,), generator=gen(),
                                  drive=torch.zeros(4, 2, dtype=f64)), ValueError, "drive"),
        (lambda: eb.pairing_protocol(n, eb.TraceRule(), [0.5, 1.0], trials=2, weight=0.1, generator=gen()),
         ValueError, "lags"),
        (lambda: eb.pairing_protocol(n, eb.TraceRule(), [1], trials=2, weight=0.1, generator=gen(),
                                     control_trials=3), ValueError, "control_trials"),
        (lambda: eb.pairing_protocol(n, "trace", [1], trials=2, weight=0.1, generator=gen()), TypeError, "rule"),
        (lambda: eb.window_prediction([1], n, eb.CentredRule(2)), TypeError, "rule"),
        (lambda: eb.fit_decay([1, 2], [1, 2]), ValueError, "x, y"),
        (lambda: eb.fit_decay([1, 2, 3], [1, 2, 3], se=[1, 0, 1]), ValueError, "se"),
        (lambda: eb.random_rates(5, (2,), tau_c=5.0, lo=0.5, hi=0.2, generator=gen()), ValueError, "lo, hi"),
        (lambda: eb.ou_process(5, (2,), tau_c=0.5, generator=gen()), ValueError, "tau_c"),
        (lambda: eb.spike_rule_mean(eb.SpikingNeuron(reset=1.0), eb.TraceRule(), torch.zeros(5, 1, dtype=f64), w),
         ValueError, "neuron"),
        (lambda: eb.group_cosines(torch.ones(4, 2, dtype=f64), torch.zeros(2, dtype=f64), [1]), ValueError,
         "direction"),
        (lambda: eb.group_cosines(torch.ones(4, 2, dtype=f64), torch.ones(2, dtype=f64), [8]), ValueError, "m_list"),
        (lambda: eb.predicted_cosines(torch.ones(2, dtype=f64), torch.eye(3, dtype=f64), torch.ones(2, dtype=f64),
                                      [1], draws=10, generator=gen()), ValueError, "cov"),
        (lambda: eb.bootstrap_correlation(torch.ones(3, 2, dtype=f64), torch.ones(3, 3, dtype=f64), resamples=20,
                                          generator=gen()), ValueError, "b"),
        (lambda: eb.trace_derivative(torch.ones(1, 2, dtype=f64), eb.TraceRule()), ValueError, "V"),
    ]
    for call, exc, name in cases:
        with pytest.raises(exc) as info:
            call()
        if name is not None:
            assert str(info.value).startswith(name + ":"), (name, str(info.value))


def test_network_arguments_are_validated_by_name():
    net, x, d, hs = small_problem()
    kw = dict(trials=2, eps=0.2, beta=1.0, target=d, burn=80, window=30, population=4, p_max=0.5, ap_area=4.0,
              rule=eb.TraceRule(2.0, 4.0), generator=gen())
    tanh = eb.LayeredEBM([4, 6, 3], "tanh")
    cases = [
        (lambda: eb.spiking_network(tanh, x, hs, **kw), "net"),
        (lambda: eb.spiking_network(net, x + 2.0, hs, **kw), "x"),
        (lambda: eb.spiking_network(net, x, hs, **{**kw, "trials": 0}), "trials"),
        (lambda: eb.spiking_network(net, x, hs, **{**kw, "burn": 10}), "burn"),
        (lambda: eb.spiking_network(net, x, hs, **{**kw, "eps": 1.5}), "eps"),
        (lambda: eb.spiking_network(net, x, hs, **{**kw, "p_max": 2.0}), "p_max"),
        (lambda: eb.spiking_network(net, x, hs, **{**kw, "rule": eb.CentredRule(2)}), "rule"),
    ]
    for call, name in cases:
        with pytest.raises((ValueError, TypeError)) as info:
            call()
        assert str(info.value).startswith(name + ":"), (name, str(info.value))


@pytest.mark.cuda
def test_pairing_runs_on_the_device_of_its_inputs():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = torch.Generator(device="cuda").manual_seed(0)
    pw = eb.pairing_protocol(silent(), eb.TraceRule(2.0, 4.0), [-1, 1], trials=2, weight=0.0, generator=g,
                             device="cuda")
    assert pw.values.device.type == "cuda"
    np.testing.assert_allclose(pw.window(), [-1 / 12, 1 / 6], atol=1e-12)
