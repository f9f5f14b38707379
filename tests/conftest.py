"""Shared test fixtures: where ../shared lives, and a skip with a reason when it does not.

``python -m pytest --backend cupy`` runs the tests that take the ``backend`` fixture (the engine
against its dense reference, the chips against the local trainer, the CUDA graph step) on CuPy;
the default is NumPy. Asking for CuPy without CUDA is an error, not a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


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
    """One private local Ray instance for the whole test session (2 CPUs, loopback, no dashboard).

    ``address="local"`` so that a stale cluster address in the environment is never joined.
    """
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 object_store_memory=256 * 1024 * 1024, logging_level="warning")
    yield ray
    ray.shutdown()
