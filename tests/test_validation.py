"""Bad input gets a clear error that names the argument."""

import math

import pytest
import torch
from conftest import random_batch, random_net

import ebmlib as eb
import ebmlib.book as ebb


@pytest.fixture
def setup():
    net = random_net([4, 5, 3])
    x, d, h = random_batch(net, B=2)
    return net, x, d, h


def test_unknown_activation():
    with pytest.raises(ValueError, match="activation"):
        eb.LayeredEBM([3, 2], "relu6")


def test_bad_sizes():
    with pytest.raises(ValueError, match="sizes"):
        eb.LayeredEBM([3], "sigmoid")
    with pytest.raises(ValueError, match=r"sizes\[1\]"):
        eb.LayeredEBM([3, 0], "sigmoid")


def test_wrong_shape(setup):
    net, x, d, h = setup
    with pytest.raises(ValueError, match="x: expected shape"):
        eb.relax(net, x[:, :3])
    with pytest.raises(ValueError, match="target"):
        eb.relax(net, x, beta=0.1, target=d[:, :2])
    with pytest.raises(ValueError, match=r"h0\[2\]"):
        eb.run(net, [x, h[1], h[2][:, :1]], steps=2, eps=0.5)


def test_dtype_and_device_mismatch(setup):
    net, x, d, h = setup
    with pytest.raises(TypeError, match="x: expected dtype"):
        eb.relax(net, x.float())
    with pytest.raises(ValueError, match="x: expected device"):
        eb.relax(net, torch.empty(2, 4, dtype=torch.float64, device="meta"))


def test_nan_and_inf(setup):
    net, x, d, h = setup
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match="x: contains NaN or inf"):
        eb.relax(net, bad)
    bad_d = d.clone()
    bad_d[1, 1] = math.inf
    with pytest.raises(ValueError, match="target: contains NaN or inf"):
        eb.run(net, h, steps=1, eps=0.5, beta=0.5, target=bad_d)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, math.nan])
def test_eps_range(setup, eps):
    net, x, d, h = setup
    with pytest.raises(ValueError, match="eps"):
        eb.run(net, h, steps=1, eps=eps)


def test_temperature_and_generator(setup):
    net, x, d, h = setup
    with pytest.raises(ValueError, match="T: the temperature"):
        eb.run(net, h, steps=1, eps=0.5, T=-1.0)
    with pytest.raises(ValueError, match="generator"):
        eb.run(net, h, steps=1, eps=0.5, T=0.1)


def test_beta_needs_target_and_int_steps(setup):
    net, x, d, h = setup
    with pytest.raises(ValueError, match="target: required"):
        eb.run(net, h, steps=1, eps=0.5, beta=0.1)
    with pytest.raises(TypeError, match="steps"):
        eb.run(net, h, steps=2.5, eps=0.5)
    with pytest.raises(TypeError, match="beta"):
        eb.run(net, h, steps=1, eps=0.5, beta="large", target=d)


def test_measures_and_claims_validate():
    with pytest.raises(ValueError, match="shapes differ"):
        eb.cosine(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="lo, hi"):
        ebb.within("c", 1.0, 2.0, 1.0, "empty")
    assert not ebb.at_most("c", math.nan, 1.0, "nan never holds").holds


def test_sign_agreement_rtol_ignores_numerical_zeros():
    ref = torch.tensor([1.0, -2.0, 1e-12, -1e-13])
    meas = torch.tensor([0.5, -1.0, -3e-12, 2e-13])  # the two tiny entries disagree
    assert eb.sign_agreement(meas, ref) == 0.5
    assert eb.sign_agreement(meas, ref, rtol=1e-6) == 1.0
    with pytest.raises(ValueError, match="rtol"):
        eb.sign_agreement(meas, ref, rtol=1.5)


def test_check_finite_fast_path_is_exact():
    """The sum shortcut never hides a NaN or inf and never rejects finite values whose sum overflows."""
    from ebmlib.checks import check_finite

    for bad in (float("nan"), float("inf"), -float("inf")):
        for dtype in (torch.float32, torch.float64, torch.float16):
            t = torch.zeros(5, 3, dtype=dtype)
            t[4, 2] = bad
            with pytest.raises(ValueError, match="^arg: contains NaN or inf"):
                check_finite("arg", t)
    both = torch.tensor([float("inf"), -float("inf"), 1.0])  # the sum is NaN
    with pytest.raises(ValueError, match="arg"):
        check_finite("arg", both)
    check_finite("arg", torch.full((4,), 3e38, dtype=torch.float32))  # sum overflows, entries finite
    check_finite("arg", torch.full((4,), 6e4, dtype=torch.float16))
    for ok in (torch.empty(0, 3), torch.arange(5), torch.ones(3, dtype=torch.bool), torch.ones(2, dtype=torch.cfloat)):
        check_finite("arg", ok)
    with pytest.raises(ValueError, match="arg"):
        check_finite("arg", torch.tensor([1 + 1j, complex(float("nan"), 0)]))


def test_thread_helpers_validate():
    from ebmlib import dynamics

    net = random_net([4, 5, 3])
    with pytest.raises(ValueError, match="batch"):
        dynamics.loop_threads(net, -1)
    with pytest.raises(TypeError, match="net"):
        dynamics.loop_threads("net", 3)
    with pytest.raises(ValueError, match="^n:"):
        with dynamics.intra_op_threads(0):
            pass
