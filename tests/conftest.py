"""Shared fixtures: keys generated per session, and a guard that unit tests never start Ray."""

from __future__ import annotations

import sys

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything under tests/cluster as `cluster` and run it last.

    `-m "not cluster"` is then the fast set, and the session's one Ray starts after
    every Ray-free test has run.
    """
    for item in items:
        if "/tests/cluster/" in str(item.path):
            item.add_marker(pytest.mark.cluster)
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
