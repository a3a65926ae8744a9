"""A test that hangs fails with its stack: pytest-timeout is on, and tests/conftest.py
gives every test without a limit of its own the one for its kind."""

from __future__ import annotations

import pytest

from tests.conftest import CLUSTER_HANG_AFTER, HANG_AFTER


def test_a_test_without_a_limit_of_its_own_is_given_its_kind_s(
    request: pytest.FixtureRequest,
) -> None:
    assert request.config.pluginmanager.hasplugin("timeout")
    limit = request.node.get_closest_marker("timeout")
    assert limit is not None and limit.args == (HANG_AFTER,)
    assert HANG_AFTER < CLUSTER_HANG_AFTER  # a cluster test starts Ray nodes of its own


@pytest.mark.timeout(7)
def test_a_test_s_own_limit_is_kept(request: pytest.FixtureRequest) -> None:
    limit = request.node.get_closest_marker("timeout")
    assert limit is not None and limit.args == (7,)
