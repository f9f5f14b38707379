"""Datasets: loaders, caches and augmentation (:mod:`launch.data.datasets`)."""
