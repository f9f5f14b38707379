"""Kernels: NumPy twins against exact references; CuPy kernels against their twins."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cluster.backend import cupy_available
from cluster.kernels import BLOCK, activation_numpy, error_gate_numpy, round_half_away


def exact_round(v: float) -> float:
    """Round half away from zero on the exact rational value of v."""
    f = Fraction(v)
    n = math.floor(abs(f) + Fraction(1, 2))
    return float(n if f >= 0 else -n)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6, width=64)


def test_ties_go_away_from_zero():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994, -0.49999999999999994])
    assert round_half_away(x.copy()).tolist() == [-3, -2, -1, 1, 2, 3, 0, 0]
    assert round_half_away(x[:6].astype(np.float32)).tolist() == [-3, -2, -1, 1, 2, 3]  # float32 too


@given(arrays(np.float64, st.integers(0, 40), elements=finite))
def test_round_matches_exact_reference(x):
    expected = np.array([exact_round(v) for v in x])
    np.testing.assert_array_equal(round_half_away(x.copy()), expected)


@given(arrays(np.float64, st.integers(0, 40), elements=finite | st.sampled_from([0.5, -0.5, 1.5, 0.0, -0.0])),
       st.sampled_from([0.0, 0.25, -1.5]), st.sampled_from([1.0, 0.5, 3.0]))
def test_activation(x, bias, theta):
    pre = x.copy().reshape(1, -1)
    S, mask = activation_numpy(pre, np.full((1, 1), bias), theta)
    s_hat = (x + bias) / theta
    np.testing.assert_array_equal(S.ravel(), np.array([max(0.0, exact_round(v)) for v in s_hat]))
    # S' comes from S_hat > 0, not S > 0: 0 < S_hat < 0.5 still passes error (Eq. 5)
    np.testing.assert_array_equal(mask.ravel(), s_hat > 0)


def test_activation_blocks_and_bias_axes():
    rng = np.random.default_rng(0)
    for shape, bias_shape in [((3, BLOCK + 17), (3, 1)), ((BLOCK // 7, 9), (1, 9)), ((1, 2 * BLOCK + 5), (1, 1))]:
        pre = (rng.standard_normal(shape) * 5).astype(np.float32)
        b = rng.standard_normal(bias_shape).astype(np.float32)
        s_hat = (pre + b) / np.float32(0.75)
        S, mask = activation_numpy(pre.copy(), b, 0.75)
        np.testing.assert_array_equal(S, np.maximum(0, round_half_away(s_hat.copy())))
        np.testing.assert_array_equal(mask, s_hat > 0)


@given(arrays(np.float32, 30, elements=st.floats(-100, 100, width=32)),
       arrays(np.bool_, 30), st.sampled_from([1.0, 0.5, 2.0]))
def test_error_gate(z, mask, theta):
    E = error_gate_numpy(z.copy(), mask, theta, rounding=True)
    np.testing.assert_array_equal(
        E, np.array([exact_round(float(v)) for v in z / np.float32(theta)], np.float32) * mask)
    F = error_gate_numpy(z.copy(), mask, theta, rounding=False)
    np.testing.assert_array_equal(F, z / np.float32(theta) * mask)


HAVE_CUDA, CUDA_WHY = cupy_available()


@pytest.mark.skipif(not HAVE_CUDA, reason=f"CuPy parity needs CUDA: {CUDA_WHY}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_kernels_match_numpy_twins(dtype):
    import cupy as cp

    from cluster import kernels

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((7, 150_001)) * 8).astype(dtype)
    x[0, :8] = [0.5, -0.5, 1.5, -1.5, 0.0, 2.5, -2.5, 0.25]
    b = rng.standard_normal((7, 1)).astype(dtype)
    m = rng.random(x.shape) < 0.5
    S_ref, M_ref = activation_numpy(x.copy(), b, 0.5)
    S, M = kernels.activation(cp, cp.asarray(x), cp.asarray(b), 0.5)
    np.testing.assert_array_equal(S.get(), S_ref)
    np.testing.assert_array_equal(M.get(), M_ref)
    for rounding in (True, False):
        E = kernels.error_gate(cp, cp.asarray(x), cp.asarray(m), 2.0, rounding)
        np.testing.assert_array_equal(E.get(), error_gate_numpy(x.copy(), m, 2.0, rounding))
    R = kernels.round_any(cp, cp.asarray(x))
    np.testing.assert_array_equal(R.get(), round_half_away(x.copy()))
    # the kernels really ran on the device: results are CuPy arrays
    assert isinstance(S, cp.ndarray) and isinstance(E, cp.ndarray)
