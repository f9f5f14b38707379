import numpy as np, time
rng = np.random.default_rng(0)
K, P, B, Co = 375, 64, 100, 40
patches = rng.integers(0, 4, (K, P, B)).astype(np.float64)
pB = np.ascontiguousarray(patches.transpose(2, 1, 0))  # (B, P, K)
for nb in (100, 50, 10, 2):
    cols = np.sort(rng.choice(B, nb, replace=False))
    delta = (rng.random((Co, 8, 8, nb)) < 0.02) * rng.choice([-1., 1.], (Co, 8, 8, nb))
    t = time.perf_counter()
    for _ in range(20):
        p = patches[..., cols]
        d2 = delta.reshape(Co, -1)
        g1 = d2 @ p.reshape(K, -1).T
    t1 = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    for _ in range(20):
        q = pB[cols]                              # (nb, P, K) contiguous blocks
        d3 = delta.reshape(Co, P, nb).transpose(0, 2, 1).reshape(Co, nb * P)
        g2 = d3 @ q.reshape(nb * P, K)
    t2 = (time.perf_counter() - t) / 20
    t = time.perf_counter()
    for _ in range(20):
        co, pp, bb = np.nonzero(delta.reshape(Co, P, nb))
        G = pB[cols[bb], pp]                      # (nnz, K)
        M = np.zeros((Co, len(co))); M[co, np.arange(len(co))] = delta.reshape(Co, P, nb)[co, pp, bb]
        g3 = M @ G
    t3 = (time.perf_counter() - t) / 20
    assert np.array_equal(g1, g2) and np.array_equal(g1, g3)
    print(nb, f"now {t1*1e3:.2f} ms, sample-major {t2*1e3:.2f} ms, sparse {t3*1e3:.2f} ms")
