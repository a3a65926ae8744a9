"""The load side of bench_e2e.py: a FakeGitHub and a load generator in one process.

Run by bench_e2e.py at nice 19 (so the system under test is not starved by its load).
Protocol on stdin/stdout, one JSON object per line:

1. it prints ``{"fake": URL}`` once the fake listens;
2. it reads ``{"target": URL, "deliveries": N, "concurrency": C, "warmup": W}``;
3. it sends W warm-up deliveries, then N measured ones, signed, through `POST
   /webhooks`, keeping C in flight; it waits for every comment at the fake and
   prints the results; then it reads the next command (or EOF, and exits).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ghbot.testing import FakeGitHub
from ghbot.testing.identity import TOKEN_LIFETIME
from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import sign

FIXTURE = EXAMPLES


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


class Harness:
    def __init__(
        self,
        public_key: bytes,
        installations: int,
        secret: str,
        *,
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        self.fake = FakeGitHub(
            app_id=4242,
            public_key_pem=public_key,
            max_concurrent=None,
            token_lifetime=token_lifetime,
        )
        self.installations = installations
        self.secret = secret
        self.template = json.loads((FIXTURE / "issues.opened.json").read_text())
        self.commented: dict[str, float] = {}
        self.done = asyncio.Event()
        self.expected = 0
        make_comment = self.fake.store.make_comment

        def recording(repo: Any, issue: Any, body: str, user: Any) -> Any:
            self.commented.setdefault(body.rsplit(" ", 1)[-1], time.monotonic())
            if len(self.commented) >= self.expected:
                self.done.set()
            return make_comment(repo, issue, body, user)

        self.fake.store.make_comment = recording  # type: ignore[method-assign]

    async def start(self) -> str:
        await self.fake.start()
        for n in range(1, self.installations + 1):
            self.fake.add_installation(n, f"org{n}", ["repo"])
            self.fake.add_issue(f"org{n}/repo", "benchmark issue")
        return self.fake.url

    def body(self, n: int) -> tuple[bytes, str]:
        installation = n % self.installations + 1
        data = dict(self.template)
        data["installation"] = {"id": installation}
        data["repository"] = {
            **self.template["repository"],
            "full_name": f"org{installation}/repo",
            "name": "repo",
            "owner": {**self.template["repository"]["owner"], "login": f"org{installation}"},
        }
        data["issue"] = {**self.template["issue"], "number": 1}
        return json.dumps(data).encode(), str(uuid.uuid4())

    def _request(self, host: str, port: int, body: bytes, guid: str) -> tuple[bytes, str]:
        """Return a whole HTTP request as GitHub sends a delivery, and its GUID."""
        head = (
            f"POST /webhooks HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "User-Agent: GitHub-Hookshot/bench\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-GitHub-Event: issues\r\n"
            f"X-GitHub-Delivery: {guid}\r\n"
            "X-GitHub-Hook-ID: 1\r\n"
            f"X-Hub-Signature-256: {sign(body, self.secret)}\r\n"
            "\r\n"
        )
        return head.encode() + body, guid

    async def run(
        self, target: str, deliveries: int, concurrency: int, warmup: int
    ) -> dict[str, Any]:
        if warmup:
            await self._load(target, warmup, concurrency)
        return await self._load(target, deliveries, concurrency)

    async def _load(self, target: str, count: int, concurrency: int) -> dict[str, Any]:
        self.commented.clear()
        self.done.clear()
        self.expected = count
        # Bodies, GUIDs and signatures are made before the clock starts: GitHub's side of
        # the work is not what is measured, and the less this process spends per
        # delivery the less it takes from the system under test.
        host, port = _host_port(target)
        prepared = [self._request(host, port, *self.body(n)) for n in range(count)]
        sent_at: dict[str, float] = {}
        acks: list[float] = []
        statuses: dict[int, int] = {}
        queue = iter(prepared)

        async def worker() -> None:
            # A raw keep-alive HTTP/1.1 client: a few tens of microseconds a request,
            # where aiohttp's client costs several hundred, all taken from the machine
            # the system under test runs on.
            reader, writer = await asyncio.open_connection(host, port)
            try:
                for request, guid in queue:
                    start = time.monotonic()
                    sent_at[guid] = start
                    writer.write(request)
                    status, close = await _read_response(reader)
                    statuses[status] = statuses.get(status, 0) + 1
                    acks.append(time.monotonic() - start)
                    if close:
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
            finally:
                writer.close()

        began, cpu_began = time.monotonic(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        acked = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), timeout=120)
        finished = max(self.commented.values(), default=acked)
        cpu = time.process_time() - cpu_began
        e2e = [self.commented[g] - sent_at[g] for g in self.commented if g in sent_at]
        return {
            "deliveries": count,
            "handled": len(e2e),
            "statuses": statuses,
            "seconds": finished - began,
            "throughput": len(e2e) / (finished - began),
            "ack_throughput": count / (acked - began),
            "harness_cpu_ms": cpu * 1000 / count,
            "ack_ms": {
                q: percentile(acks, p) * 1000
                for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
            "e2e_ms": {
                q: percentile(e2e, p) * 1000
                for q, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
            },
        }


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response with a Content-Length body; return its status and whether the
    server closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
        elif name == "transfer-encoding":
            raise RuntimeError("the load generator reads Content-Length bodies only")
    if length:
        await reader.readexactly(length)
    return status, close


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--public-key", required=True)
    parser.add_argument("--installations", type=int, default=200)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    harness = Harness(Path(args.public_key).read_bytes(), args.installations, args.secret)
    print(json.dumps({"fake": await harness.start()}), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = json.loads(line)
        result = await harness.run(
            command["target"], command["deliveries"], command["concurrency"], command["warmup"]
        )
        print(json.dumps(result), flush=True)
    await harness.fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
