"""Shared test fixtures: where ../shared lives, and a skip with a reason when it does not.

Markers (README, *Tests*): ``ray`` — the test starts or joins a Ray cluster (the session fixture
``ray_session``, or a Ray instance of its own in a subprocess); ``data`` — it reads ``../shared``
(real data or the conformance cases); ``slow`` — it takes seconds to minutes (every ``ray`` test
is also ``slow``); ``multihost`` — a Ray cluster over emulated hosts (the fixture ``emulated_hosts``:
network namespaces joined by shaped links, ``launch/tools/hosts.py``; skipped with the reason where
they cannot be made, e.g. not root), also ``ray``. ``python -m pytest -m "not slow"`` is the fast tier.

``python -m pytest --backend cupy`` runs the tests that take the ``backend`` fixture (the engine
against its dense reference, the chips against the local trainer, the CUDA graph step) on CuPy;
the default is NumPy. Asking for CuPy without CUDA is an error, not a skip.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from .procs import parcels

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


MARKERS = {
    "ray": "starts or joins a Ray cluster (also slow)",
    "data": "reads ../shared (real data sets or the conformance cases)",
    "slow": "takes seconds to minutes; left out of the fast tier (-m 'not slow')",
    "multihost": "runs a Ray cluster over emulated hosts (network namespaces; needs root), also ray and slow",
}


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def pytest_collection_modifyitems(config, items):
    """Markers that follow from a test's fixtures: ``ray_session`` is Ray, ``shared_dir`` and
    ``mnist_dir`` are data; every Ray test is slow."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "ray_session" in names:
            item.add_marker(pytest.mark.ray)
        if "emulated_hosts" in names:
            item.add_marker(pytest.mark.multihost)
        if item.get_closest_marker("multihost") is not None:
            item.add_marker(pytest.mark.ray)
        if names & {"shared_dir", "mnist_dir"}:
            item.add_marker(pytest.mark.data)
        if item.get_closest_marker("ray") is not None:
            item.add_marker(pytest.mark.slow)


def pytest_addoption(parser):
    parser.addoption("--backend", choices=("numpy", "cupy"), default="numpy",
                     help="array backend for the tests that take the `backend` fixture (default numpy)")


@pytest.fixture(scope="session")
def backend(request) -> str:
    name = request.config.getoption("--backend")
    if name == "cupy":
        from cluster.backend import cupy_available

        ok, why = cupy_available()
        if not ok:
            pytest.fail(f"--backend cupy asked for, but {why}")
    return name


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}: real-data and conformance tests need it")
    return SHARED


@pytest.fixture(scope="session")
def mnist_dir(shared_dir: Path) -> Path:
    d = shared_dir / "data" / "mnist"
    if not (d / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found in {d}")
    return d


@pytest.fixture(scope="session")
def ray_session():
    """One private local Ray instance for the whole test session (2 CPUs, loopback only, no dashboard).

    ``address="local"`` so that a stale cluster address in the environment is never joined.
    """
    import ray

    from launch.run.ray_session import init_private

    if not ray.is_initialized():
        init_private(2, 256 * 1024 * 1024, logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def emulated_hosts():
    """Three emulated hosts (``spikegrad hosts up --hosts 3 --link-mbit 1000``) with a Ray node in
    each, for one test module; everything made is removed afterwards, however the tests end. Skips,
    with the reason, where network namespaces cannot be made here (not root, no iproute2)."""
    import os
    import shutil
    import tempfile

    from launch.tools import hosts

    why = hosts.can_make_hosts()
    if why:
        pytest.skip(why)
    before = os.environ.get(hosts.STATE_ROOT_ENV)
    root = tempfile.mkdtemp(prefix="sgh", dir="/tmp")  # short: Ray's socket paths live below it
    os.environ[hosts.STATE_ROOT_ENV] = root
    name = f"t{os.getpid() % 100000}"
    try:
        made = hosts.up(3, 1000.0, name=name, cpus=1.0, object_store_mb=200)
        try:
            yield made
        finally:
            hosts.down(name)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if before is None:
            os.environ.pop(hosts.STATE_ROOT_ENV, None)
        else:
            os.environ[hosts.STATE_ROOT_ENV] = before


@pytest.fixture(autouse=True)
def no_parcels_left():
    """No test leaves chips' shared-memory messages behind (``actors/transport.py``): the files in
    /dev/shm are listed before and after every test."""
    before = parcels()
    yield
    left = sorted(parcels() - before)
    assert not left, f"shared-memory messages left in /dev/shm: {left[:5]}"
