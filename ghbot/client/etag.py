"""A bounded LRU of conditional-request validators and the answers they stand for.

GitHub answers `If-None-Match` with a 304 when nothing changed, and a 304 does not count
against the primary rate limit. The ETag depends on the Authorization header, so keys
carry the credential's identity (an installation, an app, a hash of a plain token):
one installation never sees another's cached answer.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping

__all__ = ["SHARED_ETAGS", "CachedAnswer", "ETagCache"]

#: (credential identity, absolute URL, Accept header)
Key = tuple[str, str, str]


class CachedAnswer:
    """A 200 answer kept as its raw body, so every hit decodes a fresh object."""

    __slots__ = ("body", "etag", "headers")

    def __init__(self, etag: str, body: bytes, headers: Mapping[str, str]) -> None:
        self.etag = etag
        self.body = body
        self.headers = headers


class ETagCache:
    """Keep the `maxsize` most recently used answers; the oldest is dropped first.

    Clients on several threads (one loop each) may share one cache.
    """

    __slots__ = ("_entries", "hits", "maxsize")

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.hits = 0
        self._entries: OrderedDict[Key, CachedAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"ETagCache({len(self._entries)}/{self.maxsize}, hits={self.hits})"

    def get(self, key: Key) -> CachedAnswer | None:
        """Return the answer stored under `key` and mark it recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            # Another thread's client may have evicted it since: the entry is still good.
            with contextlib.suppress(KeyError):
                self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, answer: CachedAnswer) -> None:
        """Store `answer` under `key`, dropping the least recently used beyond `maxsize`."""
        self._entries[key] = answer
        with contextlib.suppress(KeyError):
            self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            with contextlib.suppress(KeyError):
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every answer."""
        self._entries.clear()


#: The process-wide cache clients use unless given their own (or None, for none).
SHARED_ETAGS = ETagCache()
