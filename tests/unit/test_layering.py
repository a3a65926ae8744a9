"""The SDK stands alone: importing it (and a bot's `actors` imports) never imports Ray."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_sdk_and_writing_a_bot_needs_no_ray() -> None:
    code = (
        "import sys\n"
        "import ghbot, ghbot.events, ghbot.webhooks, ghbot.auth, ghbot.client, ghbot.journal\n"
        "import ghbot.testing, ghbot.cli\n"
        "from actors import InstallationActor, on\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_deploy_is_resolved_lazily() -> None:
    import ghbot

    assert callable(ghbot.deploy)
