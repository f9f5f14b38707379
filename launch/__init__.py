"""Everything that touches the outside world, in three rooms.

* ``launch.run`` — the driver and its engines: the configuration, the run directory, the driver
  (epochs, checkpoints, resume, recovery, metrics), the engine protocol and its two engines
  (``local``: one process; ``chips``: a Ray cluster of chip actors) and the Ray session.
* ``launch.data`` — the datasets (MNIST, CIFAR-10 and its image folders, scikit-learn's digits).
* ``launch.tools`` — the commands beyond training: conformance, verify, report, traffic, bench,
  the GPU check and the PyTorch reference.

``launch.cli`` is the ``spikegrad`` command line over all three.
"""
