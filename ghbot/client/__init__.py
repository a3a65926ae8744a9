"""The async GitHub client: REST, pagination, GraphQL, app and installation auth.

```python
async with GitHub(token="ghs_…") as gh:
    issue = (await gh.request("GET", "/repos/octo/hello/issues/1")).data
    async for comment in gh.paginate("/repos/octo/hello/issues/1/comments"):
        ...

app = GitHubApp(AppAuth(app_id, private_key))
gh = app.installation(installation_id)       # tokens cached, refreshed single-flight
```

One connection pool per event loop is shared by every client (`ghbot.client.pool`);
`ClientOptions` holds what clients share, `Budgets` and a `CircuitBreaker` what one
installation owns.
"""

from ghbot.client.app import GitHubApp
from ghbot.client.credentials import Credentials, TokenSource
from ghbot.client.etag import SHARED_ETAGS, ETagCache
from ghbot.client.github_client import GitHub
from ghbot.client.options import DEFAULT_OPTIONS, Budgets, ClientOptions
from ghbot.client.pool import MAX_CONCURRENCY, Pool, close_pool, current_pool
from ghbot.client.response import Response, items_of, parse_links
from ghbot.client.tokens import InstallationTokens, Mint

__all__ = [
    "DEFAULT_OPTIONS",
    "MAX_CONCURRENCY",
    "SHARED_ETAGS",
    "Budgets",
    "ClientOptions",
    "Credentials",
    "ETagCache",
    "GitHub",
    "GitHubApp",
    "InstallationTokens",
    "Mint",
    "Pool",
    "Response",
    "TokenSource",
    "close_pool",
    "current_pool",
    "items_of",
    "parse_links",
]
