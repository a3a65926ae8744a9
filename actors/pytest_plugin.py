"""ghbot's pytest plugin (loaded by pytest wherever ghbot is installed): bot fixtures.

```python
async def test_welcome(ghbot_harness) -> None:
    bot = await ghbot_harness(Greeter)          # started; closed after the test
    done = await bot.deliver("issues.opened")
    assert done.requests_to("/repos/Codertocat/Hello-World/issues/1/comments", "POST")
```

`ghbot_harness(bot_class, **options)` takes `BotHarness`'s options. The fixture is
async: it needs `pytest-asyncio` (without it, the plugin defines nothing).
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from actors.bot import InstallationActor
from actors.testing import BotHarness

__all__ = ["HarnessFactory"]

HarnessFactory = Callable[..., Awaitable[BotHarness]]

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def ghbot_harness() -> AsyncIterator[HarnessFactory]:
        """Start `BotHarness`es for a test; each is closed when the test ends."""
        started: list[BotHarness] = []

        async def start(bot: type[InstallationActor], **options: Any) -> BotHarness:
            harness = await BotHarness(bot, **options).__aenter__()
            started.append(harness)
            return harness

        try:
            yield start
        finally:
            for harness in reversed(started):
                await harness.__aexit__(None, None, None)
