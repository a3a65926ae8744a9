"""A bounded LRU of conditional-request validators and the answers they stand for.

Bounded twice: by entries and by the bytes of the bodies kept, since one listing can
weigh a megabyte where an issue weighs a few kilobytes.

GitHub answers `If-None-Match` with a 304 when nothing changed, and a 304 does not count
against the primary rate limit. The ETag depends on the Authorization header, so keys
carry the credential's identity (an installation, an app, a hash of a plain token):
one installation never sees another's cached answer.
https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api#use-conditional-requests-if-appropriate
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping

from ghbot.errors import UsageError

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
    """Keep the most recently used answers: at most `maxsize` of them, and bodies of at
    most `max_bytes` in all; the least recently used is dropped first. An answer
    larger than `max_bytes` by itself is not kept.

    Clients on several threads (one loop each) may share one cache.
    """

    __slots__ = ("_bytes", "_entries", "_lock", "hits", "max_bytes", "maxsize")

    def __init__(self, maxsize: int = 10_000, *, max_bytes: int = 64 * 2**20) -> None:
        if maxsize < 1 or max_bytes < 1:
            raise UsageError("maxsize and max_bytes must be at least 1")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.hits = 0
        self._entries: OrderedDict[Key, CachedAnswer] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()  # keeps `_bytes` equal to the bodies kept

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"ETagCache({len(self._entries)}/{self.maxsize}, {self._bytes}/{self.max_bytes} B,"
            f" hits={self.hits})"
        )

    @property
    def size_bytes(self) -> int:
        """The bytes of the bodies kept."""
        return self._bytes

    def get(self, key: Key) -> CachedAnswer | None:
        """Return the answer stored under `key` and mark it recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            # Another thread's client may have evicted it since: the entry is still good.
            with contextlib.suppress(KeyError):
                self._entries.move_to_end(key)
        return entry

    def put(self, key: Key, answer: CachedAnswer) -> None:
        """Store `answer` under `key`, dropping the least recently used beyond the bounds."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)
            if len(answer.body) > self.max_bytes:
                return
            self._entries[key] = answer
            self._bytes += len(answer.body)
            while len(self._entries) > self.maxsize or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.body)

    def clear(self) -> None:
        """Forget every answer."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0


#: The process-wide cache clients use unless given their own (or None, for none).
SHARED_ETAGS = ETagCache()
