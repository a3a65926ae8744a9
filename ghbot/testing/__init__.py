"""Test helpers: a stateful fake GitHub (real HTTP on 127.0.0.1) and a fake clock.

```python
async with FakeGitHub(app_id=1, public_key_pem=auth.public_key_pem()) as fake:
    fake.add_installation(1, "octo-org", ["hello-world"])
    fake.faults.add(r"/comments$", "server_error", count=2)
    ...
    assert fake.requests_to("/repos/octo-org/hello-world/issues/1/comments", "POST")
```

`ghbot fake-github --port 9900` runs one for local development. `example_payload`
returns one of GitHub's example webhook payloads, with fields changed.
"""

from ghbot.testing.clock import FakeClock
from ghbot.testing.faults import KINDS as FAULT_KINDS
from ghbot.testing.faults import Fault, Faults
from ghbot.testing.keys import app_key_pair
from ghbot.testing.payloads import example_names, example_payload
from ghbot.testing.server import FakeGitHub, RecordedRequest
from ghbot.testing.thread import FakeGitHubThread

__all__ = [
    "FAULT_KINDS",
    "FakeClock",
    "FakeGitHub",
    "FakeGitHubThread",
    "Fault",
    "Faults",
    "RecordedRequest",
    "app_key_pair",
    "example_names",
    "example_payload",
]
