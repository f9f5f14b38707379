"""A slow, obvious reference: every layer as an explicit dense connection matrix.

Used as the oracle for the im2col/col2im engine and the synaptic-operation
counters: M[out, in] is the weight of the synapse from input neuron ``in`` to
output neuron ``out`` (neurons flattened in (C, H, W) order), built by loops.
"""

import numpy as np

from cluster.topology import Dense, Pool


def connection_matrix(layer, W=None, theta_ff=1.0):
    Ci, H, Wd = layer.in_shape
    Co, Ho, Wo = layer.out_shape
    n_in, n_out = Ci * H * Wd, Co * Ho * Wo
    M = np.zeros((n_out, n_in))
    C = np.zeros((n_out, n_in), dtype=bool)  # connection exists (weight may be 0)

    def idx_in(c, i, j):
        return (c * H + i) * Wd + j

    def idx_out(c, i, j):
        return (c * Ho + i) * Wo + j

    if isinstance(layer, Dense):
        M[:] = W
        C[:] = True
    elif isinstance(layer, Pool):
        k = layer.size
        for c in range(Co):
            for i in range(Ho):
                for j in range(Wo):
                    for a in range(k):
                        for b in range(k):
                            M[idx_out(c, i, j), idx_in(c, i * k + a, j * k + b)] = 1.0 / k ** 2
                            C[idx_out(c, i, j), idx_in(c, i * k + a, j * k + b)] = True
    else:
        k, p = layer.kernel, layer.padding
        for co in range(Co):
            for i in range(Ho):
                for j in range(Wo):
                    for ci in range(Ci):
                        for a in range(k):
                            for b in range(k):
                                ii, jj = i + a - p, j + b - p
                                if 0 <= ii < H and 0 <= jj < Wd:
                                    M[idx_out(co, i, j), idx_in(ci, ii, jj)] = 0.0 if W is None else W[co, ci, a, b]
                                    C[idx_out(co, i, j), idx_in(ci, ii, jj)] = True
    return M, C


def bias_vector(layer, b):
    Co, Ho, Wo = layer.out_shape
    return np.repeat(np.asarray(b, dtype=float), Ho * Wo)
