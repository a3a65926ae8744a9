"""The app's clock steps forward and back by minutes while tokens are refreshed.

GitHub's time is one `FakeClock` (the fake checks JWTs' `iat` and `exp`, and token
expiry, against it); the app and the runtime read it plus a skew the test steps, as an
NTP correction steps a machine's clock (the machine's own clock is never touched).
Between steps GitHub's time moves on by most of a token's hour, so each phase needs a
new installation token, minted with a JWT made on the stepped clock. Under a steady
stream of deliveries the history must hold (`tests.history`), with no dead letter.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.faults.support import FULL, GitHubRig
from tests.history import Sender

pytestmark = pytest.mark.faults

PER_PHASE = 64 if FULL else 16
#: (skew of the app's clock in seconds, GitHub time that passes before the phase)
PHASES = [
    (0, 0),
    (+300, 600),  # 5 min ahead: its JWTs' `iat` is in GitHub's future
    (+300, 3000),  # an hour on: the token must be replaced
    (-300, 600),  # 5 min behind (a 10 min step back): tokens look fresher than they are
    (-300, 3000),  # the token expires at GitHub before the app thinks it does
    (+600, 3000),  # 10 min ahead: a JWT's `exp` would be in the past
    (-900, 3700),  # 25 min back, an hour on: the app uses a token GitHub let expire
    (0, 3000),
]


async def test_clock_steps_during_token_refresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ghbot.client")
    async with GitHubRig(tmp_path) as rig:
        assert rig.fake is not None
        sender = Sender(rig.shard, rig.history)
        for skew, passes in PHASES:
            rig.github_clock.advance(passes)
            rig.skew = skew
            await rig.stream(sender, PER_PHASE)
            await rig.shard.wait_idle()
        figures = await rig.settle(sender)
        asked = rig.mints()
        granted = len(rig.fake.identities.grants)
    refused = [r.getMessage() for r in caplog.records if r.getMessage().endswith("-> 401")]
    jwt = sum("/access_tokens" in m for m in refused)
    print(
        f"\nclock steps: {asked} token requests, {granted} granted; 401s: {jwt} to a JWT "
        f"(clocks disagree), {len(refused) - jwt} to an expired token",
        figures,
    )
    assert jwt >= 1 and len(refused) > jwt
    assert figures["dead"] == 0
    assert figures["acknowledged"] == PER_PHASE * len(PHASES)
    assert granted >= 4  # a new token for each hour GitHub's time moved on
