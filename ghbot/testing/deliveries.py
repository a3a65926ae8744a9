"""The fake app's webhook deliveries: the log GitHub keeps, and redelivery.

Tests add deliveries as if GitHub had sent them (`add`), or have the fake send one to a
webhook URL, signed with the secret (`send`). `POST …/attempts` records a redelivery
with the same GUID and, when a webhook URL is set, sends the original payload again.
Attempts older than `kept_for` (GitHub's 3 days) are no longer listed nor redelivered.
https://docs.github.com/en/rest/apps/webhooks
https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec

from ghbot.digits import whole_number
from ghbot.testing.router import Ctx, Reply, Router, error
from ghbot.testing.state import iso
from ghbot.webhooks import sign

__all__ = ["Deliveries"]

HOOK_ID = 424242
#: How long GitHub keeps an app's delivery attempts, listed and redeliverable: 3 days
#: (GitHub Enterprise Server keeps 7: set `Deliveries.kept_for`).
KEPT_FOR = 3 * 24 * 3600.0


class Deliveries:
    """Every delivery attempt, oldest first; each a dict shaped like GitHub's answer."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        app_id: int,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        self.clock = clock
        self.app_id = app_id
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        #: Every attempt made, aged out or not (the tests' record).
        self.attempts: list[dict[str, Any]] = []
        #: Seconds an attempt stays listed and can be redelivered (`KEPT_FOR`).
        self.kept_for = KEPT_FOR
        self._bodies: dict[int, bytes] = {}
        self._at: dict[int, float] = {}
        self._ids = iter(range(70_000_001, 2**62))
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def add(
        self,
        event: str,
        payload: dict[str, Any] | None = None,
        *,
        action: str | None = None,
        status_code: int = 200,
        guid: str | None = None,
        installation_id: int | None = None,
        redelivery: bool = False,
    ) -> dict[str, Any]:
        """Record a delivery as GitHub would have; `status_code` ≥ 300 (or 0) is a failure."""
        payload = payload if payload is not None else {}
        action = action or payload.get("action")
        body = msgspec.json.encode(payload)
        guid = guid or str(uuid.uuid4())
        return self._record(
            event, action, body, guid, installation_id, redelivery, status_code, 0.05, {}
        )

    async def send(
        self,
        event: str,
        payload: dict[str, Any],
        *,
        guid: str | None = None,
        installation_id: int | None = None,
    ) -> dict[str, Any]:
        """POST a delivery to the webhook URL, signed, and record how it went."""
        body = msgspec.json.encode(payload)
        guid = guid or str(uuid.uuid4())
        return await self._post(event, payload.get("action"), body, guid, installation_id, False)

    async def redeliver(self, delivery_id: int) -> dict[str, Any] | None:
        """Record a redelivery of `delivery_id` (and send it, with a webhook URL)."""
        original = self._kept_one(delivery_id)
        if original is None:
            return None
        body = self._bodies[delivery_id]
        event, action, guid = original["event"], original["action"], original["guid"]
        args = (event, action, body, guid, original["installation_id"], True)
        if self.webhook_url is None:
            return self._record(*args, 200, 0.01, {})
        return await self._post(*args)

    async def _post(
        self,
        event: str,
        action: str | None,
        body: bytes,
        guid: str,
        installation_id: int | None,
        redelivery: bool,
    ) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/fake",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Hook-ID": str(HOOK_ID),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
        }
        if self.webhook_secret:
            headers["X-Hub-Signature-256"] = sign(body, self.webhook_secret)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        started = time.perf_counter()
        status = 0
        assert self.webhook_url is not None
        try:
            timeout = aiohttp.ClientTimeout(total=10)
            async with self._session.post(
                self.webhook_url, data=body, headers=headers, timeout=timeout
            ) as answer:
                status = answer.status
                await answer.read()
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        took = time.perf_counter() - started
        return self._record(
            event, action, body, guid, installation_id, redelivery, status, took, headers
        )

    def _record(
        self,
        event: str,
        action: str | None,
        body: bytes,
        guid: str,
        installation_id: int | None,
        redelivery: bool,
        status_code: int,
        duration: float,
        headers: dict[str, str],
    ) -> dict[str, Any]:
        delivery_id = next(self._ids)
        ok = 200 <= status_code < 300
        status = "OK" if ok else f"Invalid HTTP Response: {status_code}"
        if not status_code:
            status = "failed to connect to host"
        record = {
            "id": delivery_id,
            "guid": guid,
            "delivered_at": iso(self.clock()),
            "redelivery": redelivery,
            "duration": round(duration, 3),
            "status": status,
            "status_code": status_code,
            "event": event,
            "action": action,
            "installation_id": installation_id,
            "repository_id": None,
            "throttled_at": None,
            "request_headers": {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"},
        }
        self.attempts.append(record)
        self._bodies[delivery_id] = body
        self._at[delivery_id] = self.clock()
        return record

    def _kept(self) -> list[dict[str, Any]]:
        """The attempts GitHub still keeps, oldest first."""
        oldest = self.clock() - self.kept_for
        return [d for d in self.attempts if self._at[d["id"]] >= oldest]

    def _kept_one(self, delivery_id: int | None) -> dict[str, Any] | None:
        """The attempt `delivery_id`, if GitHub still keeps it."""
        return next((d for d in self._kept() if d["id"] == delivery_id), None)

    # --- routes -----------------------------------------------------------------------

    def register(self, router: Router) -> None:
        # `status` (a filter of the list) is not honoured: answered 501.
        add = functools.partial(router.add, auth="jwt", query={})
        add("GET", "/app/hook/deliveries", self.list, query={"cursor": None})
        add("GET", "/app/hook/deliveries/{delivery_id}", self.get)
        add("POST", "/app/hook/deliveries/{delivery_id}/attempts", self.attempt)

    def list(self, ctx: Ctx) -> Reply:
        """Newest first, `per_page` ≤ 100, cursor pagination through `Link`; a cursor
        at an attempt no longer kept is refused (422: GitHub documents no answer for
        it; this one is the fake's)."""
        query = ctx.request.query
        per_page = whole_number(query.get("per_page") or "30")
        per_page = 30 if per_page is None else per_page
        if not 1 <= per_page <= 100:
            return error(422, "per_page must be between 1 and 100")
        newest = self._kept()[::-1]
        cursor = query.get("cursor")
        start = 0
        if cursor is not None:
            at = next((i for i, d in enumerate(newest) if str(d["id"]) == cursor), None)
            if at is None:
                return error(422, f"Invalid cursor: {cursor!r}")
            start = at
        page = newest[start : start + per_page]
        headers = None
        if start + per_page < len(newest):
            nxt = ctx.request.url.update_query(cursor=str(newest[start + per_page]["id"]))
            headers = {"Link": f'<{nxt}>; rel="next"'}
        return Reply([_summary(d) for d in page], headers=headers)

    def get(self, ctx: Ctx) -> Reply:
        wanted = ctx.int_param("delivery_id")
        found = self._kept_one(wanted)
        if found is None:
            return error(404, "Not Found")
        payload = msgspec.json.decode(self._bodies[found["id"]])
        detail = {
            **_summary(found),
            "url": "",
            "request": {"headers": found["request_headers"], "payload": payload},
            "response": {"headers": {}, "payload": None},
        }
        return Reply(detail)

    async def attempt(self, ctx: Ctx) -> Reply:
        wanted = ctx.int_param("delivery_id")
        if wanted is None or await self.redeliver(wanted) is None:
            return error(404, "Not Found")
        return Reply({}, 202)


def _summary(delivery: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in delivery.items() if k != "request_headers"}
