"""ghbot: a framework for GitHub Apps.

`import ghbot` never imports Ray: the SDK (webhooks, events, auth, client, journal)
stands alone. `ghbot.deploy`, the Ray Serve application builder used by
`serve run ghbot.deploy`, is resolved lazily from `actors`.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    if name == "deploy":
        from actors.ray.deploy import deploy

        return deploy
    raise AttributeError(f"module 'ghbot' has no attribute {name!r}")
