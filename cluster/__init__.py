"""SpikeGrad's spiking model as pure math: the *neuromorphic* cluster, not the Ray cluster.

This package is the network of integrate-and-fire neurons that SpikeGrad trains
(Thiele, Bichler, Dupret, "SpikeGrad: An ANN-equivalent Computation Model for
Implementing Backpropagation with Spikes", ICLR 2020), in the form of its
equivalent ANN (section 3): functions of arrays (NumPy or CuPy) and small frozen
dataclasses. No Ray, no pyarrow, no I/O here; chips (``actors``) and the outside
world (``launch``) build on it.

Modules: ``topology`` (the paper's notation), ``layers`` (conv / pool / dense
products, and the table of layer kinds every other module dispatches through),
``kernels`` (fused rounding kernels and their NumPy twins), ``network`` (forward,
backward and increments over a range of layers; the top error), ``synops``
(synaptic operations), ``events`` (the event-driven simulation of the spiking
network), ``graph`` (a whole step as a CUDA graph), ``mapping`` (a network on chips
with a capacity), ``backend`` (NumPy or CuPy, chosen once), ``errors``.

Symbols (paper symbol, code name, meaning, dtype, shape, equation):

=========  ==============  ====================================  =========  ==================  ==========
symbol     code            meaning                               dtype      shape               eq.
=========  ==============  ====================================  =========  ==================  ==========
x          ``x``           float input (S⁻¹), multiplied in      float      (B, C, H, W)        sec. 2
wˡᵢⱼ       ``W``           weights of layer l                    float      (Co, Ci, k, k) /    (1)
                                                                            (N_out, N_in)
bˡᵢ        ``b``           bias, V(0) = b                        float      (Co,)               (1)
Θff        ``theta_ff``    forward threshold                     float      scalar > 0          (1), (3)
Θbp        ``theta_bp``    error threshold                       float      scalar > 0          (6)
α          ``alpha``       error scale of the top layer          float      scalar > 0          sec. 2
η          ``eta``         learning rate on Σ_batch (lr / α)     float      scalar              (2), (14)
Ŝˡ         ``S_hat``/pre   ANN pre-activation (W S + b) / Θff    float      layer shape         (10), (15)
Sˡ         ``S``           accumulated spikes, max(0, round Ŝ)   float int  (C, H, W, B) /      (10), (15)
                                                                            (B, N)
S′ˡ        ``mask``        surrogate derivative [Ŝ > 0]          float 0/1  as S                (5)
Vᴸ         ``V``           output integration (no spikes)        float      (B, classes)        sec. 2
Uᴸ         ``U``           top error α(softmax(V) − onehot)      float      (B, classes)        sec. 2
Ẑˡ         ``Z_hat``       (Wˡ⁺¹)ᵀ ⋆ Eˡ⁺¹ / Θbp                  float      layer shape         (11), (18)
Zˡ         ``Z``           accumulated error spikes round(Ẑ)     float int  layer shape         (11), (18)
Eˡ         ``E``           gated error S′ ⊙ Z                    float int  layer shape         (7), (12)
ωˡᵢⱼ/ΔWˡ   ``sums``        −η Σ E ⊗ Sˡ⁻¹ (increment)             float      shape of W          (8), (14)
n, n_min   ``spikes``      spikes emitted / best case Σ|S|       float      per layer           (21)
=========  ==============  ====================================  =========  ==================  ==========

Layout: maps are held (C, H, W, B) inside the engine (a convolution is then one
matrix product); every exported array is (B, N) with N in (C, H, W) order.
"""
