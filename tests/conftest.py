"""Shared fixtures: keys generated per session, the session's one local Ray (for the
Ray-marked tests), and a guard that unit tests never start Ray."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.net import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def pem_pkcs1(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def pem_pkcs8(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[str]:
    """Start one local Ray and Serve for the session; yield the HTTP proxy's URL.

    Ray starts without its dashboard on 2 CPUs; Serve's HTTP proxy listens on a free
    port of 127.0.0.1. Here, not in tests/cluster, so that every Ray-marked test (the
    cluster tests, tests/faults/test_process_kills.py) shares one.
    """
    import ray
    from ray import serve

    ray.init(
        address="local",  # a new local Ray, never one found running
        num_cpus=2,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
        log_to_driver=False,
    )
    # Serve's client checks once a second whether an app it deploys or deletes is
    # there yet; each test deploys and deletes, so the session checks more often.
    from ray.serve._private import client as serve_client

    assert hasattr(serve_client, "CLIENT_POLLING_INTERVAL_S"), "Ray renamed it: look again"
    serve_client.CLIENT_POLLING_INTERVAL_S = 0.1
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()


#: A test still running after this many seconds hangs: pytest-timeout fails it with
#: its stack, rather than the run stalling until CI's own limit. Several times the
#: slowest test of each kind seen here (a Ray test starting its own nodes, a few
#: minutes), so that a slow machine does not meet it.
HANG_AFTER = 300
CLUSTER_HANG_AFTER = 900


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/cluster as `cluster` and run it last; mark the
    cluster tests that start a Ray of their own, not the session's, `own_ray`; give
    each test without a `timeout` mark of its own the one for its kind.

    `-m "not cluster"` is then the fast set, and the session's one Ray starts after
    every Ray-free test has run. `-m own_ray` can run beside the session's Ray
    (scripts/test.sh does).
    """
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
        cluster = item.get_closest_marker("cluster") is not None
        if cluster and "ray_serve" not in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.own_ray)
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(CLUSTER_HANG_AFTER if cluster else HANG_AFTER))
    items.sort(key=lambda item: item.get_closest_marker("cluster") is not None)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    is_initialized = getattr(ray, "is_initialized", None)
    return bool(callable(is_initialized) and is_initialized())


@pytest.fixture(autouse=True)
def _no_ray_outside_cluster_tests(request: pytest.FixtureRequest) -> object:
    """Fail a non-cluster test that starts Ray: unit and integration tests stay Ray-free."""
    running_before = _ray_running()
    yield
    is_cluster_test = request.node.get_closest_marker("cluster") is not None
    if not is_cluster_test and not running_before and _ray_running():
        pytest.fail("a non-cluster test started Ray; put it under tests/cluster/")
