"""Backends for the journal tests, as fixtures: SQLite in a temporary directory,
PostgreSQL in a fresh schema dropped afterwards, and the fault wrapper with no fault
armed.

PostgreSQL: ``GHBOT_TEST_POSTGRES_URL`` names a database the tests may create and
drop schemas in. Unset or unreachable, the PostgreSQL cases are skipped with the
reason, unless ``GHBOT_REQUIRE_POSTGRES=1``, which makes them fail instead (CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from ghbot.journal import FaultyJournal, Journal, open_journal

_reachable: dict[str, str | None] = {}


def _check_postgres(url: str) -> str | None:
    """Return why `url` cannot be used, or None if it answers."""

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:  # in a thread: the caller may be inside a running event loop
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, probe()).result()
    except Exception as exc:
        return f"PostgreSQL at GHBOT_TEST_POSTGRES_URL is unreachable: {type(exc).__name__}"
    return None


def postgres_url_or_skip() -> str:
    """Return the test database URL, or skip (fail if GHBOT_REQUIRE_POSTGRES=1)."""
    url = os.environ.get("GHBOT_TEST_POSTGRES_URL", "")
    required = os.environ.get("GHBOT_REQUIRE_POSTGRES") == "1"
    problem = "GHBOT_TEST_POSTGRES_URL is not set"
    if url:
        if url not in _reachable:
            _reachable[url] = _check_postgres(url)
        problem = _reachable[url] or ""
    if problem:
        if required:
            pytest.fail(f"{problem} and GHBOT_REQUIRE_POSTGRES=1")
        pytest.skip(problem)
    return url


class Backend:
    """Storage for one test; `open` gives a journal over it, again and again."""

    def __init__(self, name: str, url: str, *, faulty: bool = False) -> None:
        self.name = name
        self.url = url
        self.faulty = faulty
        self.opened: list[Journal] = []

    async def open(self) -> Journal:
        """Open a new journal object over this backend's storage."""
        journal = await open_journal(self.url)
        if self.faulty:
            journal = FaultyJournal(journal)
        self.opened.append(journal)
        return journal


async def _drop_schema(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def postgres_schema() -> AsyncIterator[Backend]:
    """Yield a PostgreSQL backend in a fresh schema; drop the schema afterwards."""
    url = postgres_url_or_skip()
    schema = f"ghbot_test_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in url else "?"
    backend = Backend("postgres", f"{url}{sep}schema={schema}")
    try:
        yield backend
    finally:
        for journal in backend.opened:
            await journal.close()
        await _drop_schema(url, schema)


def sqlite_backend(tmp_path: Path, *, faulty: bool = False) -> Backend:
    """Return a SQLite backend under `tmp_path` (wrapped in FaultyJournal if `faulty`)."""
    return Backend("faulty" if faulty else "sqlite", f"sqlite://{tmp_path}/j", faulty=faulty)


@pytest.fixture
async def postgres_backend() -> AsyncIterator[Backend]:
    """A PostgreSQL backend in a fresh schema, dropped afterwards."""
    async with postgres_schema() as backend:
        yield backend


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "faulty"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend of the conformance suite (the faulty wrapper with no fault armed)."""
    if request.param == "postgres":
        async with postgres_schema() as pg:
            yield pg
        return
    backend = sqlite_backend(tmp_path, faulty=request.param == "faulty")
    yield backend
    for journal in backend.opened:
        await journal.close()


@pytest.fixture
async def journal(backend: Backend) -> Journal:
    """An open journal on each backend (closed by the backend fixture)."""
    return await backend.open()


@pytest.fixture
def postgres_schemas() -> Callable[[], contextlib.AbstractAsyncContextManager[Backend]]:
    """Return `postgres_schema`, to open as many fresh schemas as a test needs."""
    return postgres_schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def durable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each backend that stores data itself (no wrapper)."""
    if request.param == "postgres":
        async with postgres_schema() as pg:
            yield pg
        return
    backend = sqlite_backend(tmp_path)
    yield backend
    for journal in backend.opened:
        await journal.close()
