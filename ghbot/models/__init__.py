"""Typed models of GitHub webhook payloads, generated from GitHub's official description.

One struct per event and action (`IssuesOpened`, `PullRequestSynchronize`, ...), tagged
by `action` so that one decode picks it; `<Event>Payload` is the union of an event's
actions (`IssuesPayload`), or the one struct of an event without actions
(`PushPayload`). The shared objects they reference (`RepositoryWebhooks`, `SimpleUser`,
`Issue`, ...), `KNOWN_EVENTS` (each event name and its actions), `PAYLOAD_TYPES` (each
event's type), `ACTION_TYPES` (each `event.action`'s struct) and `UnknownPayload` (what
an event or action the description lacks decodes into) come with them.

The description is the api.github.com one (`@octokit/openapi-webhooks`, version in
`_generated.py`'s header). GitHub Enterprise Server sends the same events, minus those
it does not have yet and with fewer fields in some: deliveries still decode (unknown
fields are ignored, and an event or action missing here arrives as `UnknownPayload`),
but a field GHES does not send that the description requires fails to decode
(`MalformedPayload`). `_generated.py` is written by `scripts/gen_models.py`; never edit
it by hand.

https://docs.github.com/en/webhooks/webhook-events-and-payloads
"""

from __future__ import annotations

from ghbot.models import _generated
from ghbot.models._base import Change, Model
from ghbot.models._generated import *  # noqa: F403

__all__ = ["Change", "Model"]
__all__ += _generated.__all__
