"""Kernels: NumPy twins against exact references; CuPy kernels against their twins."""

from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from cluster.backend import cupy_available
from cluster.kernels import error_gate_numpy, relu_activation_numpy, round_half_away


def exact_round(v: float) -> float:
    """Round half away from zero on the exact rational value of v."""
    f = Fraction(v)
    n = math.floor(abs(f) + Fraction(1, 2))
    return float(n if f >= 0 else -n)


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6, width=64)


def test_ties_go_away_from_zero():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999999999999994, -0.49999999999999994])
    assert round_half_away(x.copy()).tolist() == [-3, -2, -1, 1, 2, 3, 0, 0]
    # np.round would give half-to-even: the project must never use it
    assert np.round(x[:6]).tolist() != round_half_away(x[:6].copy()).tolist()


@given(arrays(np.float64, st.integers(0, 40), elements=finite))
def test_round_matches_exact_reference(x):
    expected = np.array([exact_round(v) for v in x])
    np.testing.assert_array_equal(round_half_away(x.copy()), expected)


@given(arrays(np.float64, st.integers(0, 40), elements=finite | st.sampled_from([0.5, -0.5, 1.5, 0.0, -0.0])))
def test_relu_activation(x):
    S, mask = relu_activation_numpy(x.copy())
    np.testing.assert_array_equal(S, np.array([max(0.0, exact_round(v)) for v in x]))
    # S' comes from S_hat > 0, not S > 0: 0 < S_hat < 0.5 still passes error (Eq. 5)
    np.testing.assert_array_equal(mask, (x > 0).astype(np.float64))


@given(arrays(np.float32, 30, elements=st.floats(-100, 100, width=32)),
       arrays(np.float32, 30, elements=st.sampled_from([0.0, 1.0])))
def test_error_gate(z, mask):
    E = error_gate_numpy(z.copy(), mask)
    np.testing.assert_array_equal(E, np.array([exact_round(float(v)) for v in z], np.float32) * mask)


HAVE_CUDA, CUDA_WHY = cupy_available()


@pytest.mark.skipif(not HAVE_CUDA, reason=f"CuPy parity needs CUDA: {CUDA_WHY}")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_kernels_match_numpy_twins(dtype):
    import cupy as cp
    from cluster import kernels

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(1_000_003) * 8).astype(dtype)
    x[:8] = [0.5, -0.5, 1.5, -1.5, 0.0, 2.5, -2.5, 0.25]
    m = (rng.random(x.size) < 0.5).astype(dtype)
    S_ref, M_ref = relu_activation_numpy(x.copy())
    S, M = kernels.relu_activation(cp, cp.asarray(x))
    np.testing.assert_array_equal(S.get(), S_ref)
    np.testing.assert_array_equal(M.get(), M_ref)
    E = kernels.error_gate(cp, cp.asarray(x), cp.asarray(m))
    np.testing.assert_array_equal(E.get(), error_gate_numpy(x.copy(), m))
    R = kernels.round_any(cp, cp.asarray(x))
    np.testing.assert_array_equal(R.get(), round_half_away(x.copy()))
    # the kernels really ran on the device: results are CuPy arrays
    assert isinstance(S, cp.ndarray) and isinstance(E, cp.ndarray)
