"""What the deployed actors hold: the key in the app-auth actor alone, and GitHub's
limit on requests in flight split across every process that calls GitHub."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import ray
from ray import serve

from actors.ray.app_auth_actor import KEY_RECHECK
from actors.ray.names import APP_AUTH_NAME, shard_name
from tests.cluster.conftest import (
    comments,
    eventually,
    install,
    on_fake,
    payload,
    send,
    session_worker_log_lines,
)

NO_SECRET = {"private_key": False, "private_key_path": False, "webhook_secrets": False}


async def _held(app: Any) -> dict[str, dict[str, bool]]:
    """Ask every deployed actor (and the ingress replica) which secrets it holds."""
    namespace = app.runtime.namespace
    held = {}
    for name in [APP_AUTH_NAME, *(shard_name(i) for i in range(app.runtime.shards))]:
        held[name] = await ray.get_actor(name, namespace=namespace).secrets_held.remote()
    held["ingress"] = await serve.get_app_handle("ghbot").secrets_held.remote()
    return held


async def test_only_the_app_auth_actor_holds_the_key(
    deploy: Any, fake: Any, pem_pkcs8: bytes, tmp_path: Path
) -> None:
    key_file = tmp_path / "app.pem"
    key_file.write_bytes(pem_pkcs8)
    install(fake, 3001, "keys/file")
    app = deploy("tests.cluster.bots:Greeter", key_file=key_file)

    data = payload("issues.opened", installation=3001, repo="keys/file", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    # The comment needs a token, minted with the key the app-auth actor read from the file.
    await eventually(lambda: len(comments(fake, "keys/file")) == 1)

    held = await _held(app)
    for i in range(app.runtime.shards):
        assert held[shard_name(i)] == NO_SECRET
    assert held[APP_AUTH_NAME] == {
        "private_key": True,
        "private_key_path": True,
        "webhook_secrets": False,
    }
    assert held["ingress"] == {
        "private_key": False,
        "private_key_path": True,
        "webhook_secrets": True,
    }


async def test_pem_text_reaches_the_app_auth_actor_and_no_shard(deploy: Any, fake: Any) -> None:
    app = deploy("tests.cluster.bots:Greeter")
    held = await _held(app)
    assert held[APP_AUTH_NAME]["private_key"] and not held[APP_AUTH_NAME]["webhook_secrets"]
    assert held["ingress"] == {**NO_SECRET, "webhook_secrets": True}
    assert all(held[shard_name(i)] == NO_SECRET for i in range(app.runtime.shards))


async def test_requests_in_flight_stay_within_the_app_wide_limit(deploy: Any, fake: Any) -> None:
    installations = range(3101, 3111)
    for installation in installations:
        install(fake, installation, f"gate/r{installation}")
    # 2 shards and the app-auth actor share 5: 1 for the app-auth actor, 2 per shard.
    app = deploy("tests.cluster.bots:Greeter", max_concurrent_requests=5)
    on_fake(fake, fake.fake.faults.add, "^/repos/gate/", "slow", None, delay=0.3)
    fake.fake.max_inflight = 0
    try:
        async with aiohttp.ClientSession() as session:
            sends = [
                send(
                    app.url,
                    "issues",
                    payload("issues.opened", installation=i, repo=f"gate/r{i}", issue__number=1),
                    session=session,
                )
                for i in installations
                for _ in range(3)
            ]
            assert {status for status, _ in await asyncio.gather(*sends)} == {202}

        def total() -> int:
            return sum(len(comments(fake, f"gate/r{i}")) for i in installations)

        await eventually(lambda: total() == 30, within=60)
    finally:
        on_fake(fake, fake.fake.faults.clear)
    # 30 slow comments from 10 installations could have all been in flight at once.
    assert 2 <= fake.fake.max_inflight <= 5


async def test_a_rotated_key_file_is_signed_with_at_once_and_tokens_kept(
    deploy: Any, fake: Any, pem_pkcs8: bytes, public_pem: bytes, tmp_path: Path
) -> None:
    """The private key rotates without a restart: GitHub takes a second key, the mounted
    file is replaced, the app-auth actor signs with the new key within seconds, the
    old key is deleted on GitHub; tokens minted before stay in use until they expire."""
    import os

    from ghbot.testing import app_key_pair

    key_file = tmp_path / "app.pem"
    key_file.write_bytes(pem_pkcs8)
    install(fake, 3101, "rotate/held")
    install(fake, 3102, "rotate/new")
    app = deploy("tests.cluster.bots:Greeter", key_file=key_file)
    held = payload("issues.opened", installation=3101, repo="rotate/held", issue__number=1)
    assert (await send(app.url, "issues", held))[0] == 202
    await eventually(lambda: len(comments(fake, "rotate/held")) == 1)  # its token minted

    app_auth = ray.get_actor(APP_AUTH_NAME, namespace=app.runtime.namespace)
    before = await app_auth.key_fingerprint.remote()
    new_key, new_public = app_key_pair()
    try:
        # A file that is not a key (a secret manager's half-written mount) is ignored:
        # the actor still signs with the old key and tokens are still minted.
        garbage = tmp_path / "app.pem.bad"
        garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n")
        os.replace(garbage, key_file)
        await asyncio.sleep(KEY_RECHECK + 1.5)  # the watcher has looked at it
        assert await app_auth.key_fingerprint.remote() == before
        install(fake, 3103, "rotate/garbage")
        bad = payload("issues.opened", installation=3103, repo="rotate/garbage", issue__number=1)
        assert (await send(app.url, "issues", bad))[0] == 202
        await eventually(lambda: len(comments(fake, "rotate/garbage")) == 1)

        on_fake(fake, fake.fake.add_key, new_public)  # 1. a second key on GitHub
        staged = tmp_path / "app.pem.new"  # 2. the secret manager swaps the file
        staged.write_bytes(new_key)
        os.replace(staged, key_file)
        await eventually(lambda: ray.get(app_auth.key_fingerprint.remote()) != before, 20)
        on_fake(fake, fake.fake.remove_key, public_pem)  # 3. the old key deleted on GitHub

        new = payload("issues.opened", installation=3102, repo="rotate/new", issue__number=1)
        assert (await send(app.url, "issues", new))[0] == 202  # a token minted anew
        assert (await send(app.url, "issues", held))[0] == 202  # the token held still
        await eventually(lambda: len(comments(fake, "rotate/new")) == 1)
        await eventually(lambda: len(comments(fake, "rotate/held")) == 2)

        # What the operator reads in the actor's log (docs/operations.md): the garbage
        # at ERROR, the new key at WARNING, and neither file's content.
        ignored = f"{key_file} changed but cannot be used ("
        taken = f"{key_file} changed: signing with the new key"
        await eventually(lambda: len(session_worker_log_lines(str(key_file))) == 2, 10)
        first, second = session_worker_log_lines(str(key_file))
        assert ignored in first and '"level": "error"' in first
        assert taken in second and '"level": "warning"' in second
        assert "PRIVATE KEY" not in first + second
        assert new_key.splitlines()[1].decode() not in first + second
    finally:  # the session's fake takes the original key alone again
        ids = fake.fake.identities

        def restore() -> None:
            ids.public_key, ids.more_keys = public_pem, []
            ids.forget_jwts()

        on_fake(fake, restore)


async def test_a_key_given_as_pem_text_rotates_by_deploying_again(
    deploy: Any, fake: Any, public_pem: bytes, tmp_path: Path
) -> None:
    """A key given as PEM text (not a file) rotates with a redeploy of the new text: the
    app-auth actor's version covers the key, so it alone is replaced; the shards keep
    running, and tokens are minted with the new key once the old one is gone."""
    import uuid

    from ghbot.testing import app_key_pair

    install(fake, 3201, "pemtext/before")
    install(fake, 3202, "pemtext/after")
    common = {
        "namespace": f"t-{uuid.uuid4().hex[:8]}",
        "journal_url": f"sqlite://{tmp_path}/pem-journal",
    }
    app = deploy("tests.cluster.bots:Greeter", **common)
    data = payload("issues.opened", installation=3201, repo="pemtext/before", issue__number=1)
    assert (await send(app.url, "issues", data))[0] == 202
    await eventually(lambda: len(comments(fake, "pemtext/before")) == 1)

    namespace = app.runtime.namespace
    before = await ray.get_actor(APP_AUTH_NAME, namespace=namespace).key_fingerprint.remote()
    shards = [ray.get_actor(shard_name(i), namespace=namespace) for i in range(app.runtime.shards)]
    pids = [await shard.pid.remote() for shard in shards]
    new_key, new_public = app_key_pair()
    try:
        on_fake(fake, fake.fake.add_key, new_public)  # 1. a second key on GitHub
        await asyncio.to_thread(deploy, "tests.cluster.bots:Greeter", private_key=new_key, **common)
        app_auth = ray.get_actor(APP_AUTH_NAME, namespace=namespace)
        assert await app_auth.key_fingerprint.remote() != before
        assert [await shard.pid.remote() for shard in shards] == pids  # no shard replaced
        on_fake(fake, fake.fake.remove_key, public_pem)  # 3. the old key deleted on GitHub

        data = payload("issues.opened", installation=3202, repo="pemtext/after", issue__number=1)
        assert (await send(app.url, "issues", data))[0] == 202  # a token minted anew
        await eventually(lambda: len(comments(fake, "pemtext/after")) == 1)
    finally:  # the session's fake takes the original key alone again
        ids = fake.fake.identities

        def restore() -> None:
            ids.public_key, ids.more_keys = public_pem, []
            ids.forget_jwts()

        on_fake(fake, restore)
