"""The `ghbot` command line: one subcommand per entry in `_COMMANDS`.

Add a subcommand by registering a `Command` (a name, a help line, a function that adds
its arguments and one that runs it and returns the exit code). Errors ghbot raises
(`GhBotError`) and OS errors (a port in use, a missing file) print one line, without a
traceback, and exit with code 2.

Commands: `new` (a bot project), `register` (its GitHub App, from a manifest),
`fake-github` (a fake GitHub API for development),
`dev` (a bot on `POST /webhooks` in one process, without Ray: `actors.dev`),
`receive` (one delivery through a bot in this process, without Ray: `actors.testing`),
and, on a running deployment, `status` (the shards' counters), `dead-letters
list|replay` and `redeliver`. Those connect to Ray (`--address`, default `auto`) only when they run:
importing this module never imports Ray. They send Ray's authentication token to a
cluster on this machine without being told (`serve run` starts one with token
authentication on), and say what to do when a cluster refuses them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ghbot import __version__
from ghbot.errors import ConfigError, GhBotError

__all__ = ["ClusterError", "Command", "build_parser", "main", "register"]


@dataclass(frozen=True, slots=True)
class Command:
    """A subcommand: `configure` adds its arguments, `run` does the work."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add `command` to the CLI; raise `ValueError` when the name is taken."""
    if command.name in _COMMANDS:
        raise ValueError(f"a ghbot command named {command.name!r} exists already")
    _COMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    """Return the parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="ghbot", description="A framework for GitHub Apps.")
    parser.add_argument("--version", action="version", version=f"ghbot {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in _COMMANDS.values():
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        command.configure(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (2 for a usage or setup error)."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (GhBotError, OSError) as exc:
        print(f"ghbot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return code


# --- ghbot fake-github ----------------------------------------------------------------


def _fake_github_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=9900, help="port to listen on; 0 picks a free one")
    add("--app-id", type=int, help="the app's ID (default: GITHUB_APP_ID, else 1)")
    add("--client-id", default=os.environ.get("GITHUB_CLIENT_ID") or None)
    add(
        "--public-key",
        type=Path,
        help="the app's public key, or its private key, as a PEM file; "
        "without one, JWT signatures are not checked",
    )
    add(
        "--installation",
        action="append",
        default=[],
        metavar="ID=OWNER/REPO[,REPO…]",
        help="install the app (repeatable), e.g. 1=octo-org/hello-world",
    )
    add("--rate-limit", type=int, default=5000, help="hourly core limit per installation")
    add("--max-concurrent", type=int, default=100, help="concurrent requests before 403")
    add("--webhook-url", help="where redeliveries are sent")
    add("--webhook-secret", default=os.environ.get("GITHUB_WEBHOOK_SECRET") or None)
    add("--print-tokens", action="store_true", help="print a token for each installation")
    add(
        "--token-lifetime",
        type=_positive,
        default=3600.0,
        metavar="SECONDS",
        help="how long installation tokens last (GitHub's: 3600)",
    )
    add(
        "--latency",
        type=_not_negative,
        default=0.0,
        metavar="SECONDS",
        help="answer every request this much later (default 0)",
    )


def _run_fake_github(args: argparse.Namespace) -> int:
    from ghbot.testing import FakeGitHub

    installations = [_installation(spec) for spec in args.installation]
    fake = FakeGitHub(
        app_id=args.app_id or _app_id_from_env(),
        client_id=args.client_id,
        public_key_pem=_public_key(args.public_key) if args.public_key else None,
        host=args.host,
        port=args.port,
        rate_limit=args.rate_limit,
        max_concurrent=args.max_concurrent or None,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        token_lifetime=args.token_lifetime,
    )
    for installation_id, owner, repos in installations:
        fake.add_installation(installation_id, owner, repos)
    if args.latency:
        fake.faults.add(".", "slow", count=None, delay=args.latency)

    async def serve() -> None:
        async with fake:
            print(f"fake GitHub listening on {fake.url}", flush=True)
            if args.public_key is None:
                print("warning: no --public-key: JWT signatures are not checked", flush=True)
            for installation_id, owner, _ in installations:
                token = fake.create_token(installation_id) if args.print_tokens else "-"
                print(f"installation {installation_id} ({owner}) token {token}", flush=True)
            await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


def _positive(text: str) -> float:
    value = _not_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def _app_id_from_env() -> int:
    raw = os.environ.get("GITHUB_APP_ID", "").strip() or "1"
    if not raw.isdigit():
        raise ConfigError(f"GITHUB_APP_ID={raw!r} is not a number; pass --app-id")
    return int(raw)


def _installation(spec: str) -> tuple[int, str, list[str]]:
    ident, _, repos = spec.partition("=")
    names = [r.strip() for r in repos.split(",") if r.strip()]
    if not ident.strip().isdigit() or not names or "/" not in names[0]:
        raise ConfigError(f"--installation {spec!r}: expected ID=OWNER/REPO[,REPO…]")
    owner = names[0].split("/", 1)[0]
    return int(ident), owner, [n if "/" in n else f"{owner}/{n}" for n in names]


def _public_key(path: Path) -> bytes:
    """Read a public key PEM, or derive it from a private key PEM."""
    from cryptography.hazmat.primitives import serialization

    from ghbot.auth import load_private_key

    pem = path.read_bytes()
    if b"PRIVATE KEY" in pem:
        return (
            load_private_key(pem)
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    try:
        serialization.load_pem_public_key(pem)
    except ValueError:
        raise ConfigError(f"{path} is not a PEM public or private key") from None
    return pem


register(
    Command(
        "fake-github",
        "Run a fake GitHub API (REST, GraphQL, app auth, deliveries) for local development.",
        _fake_github_arguments,
        _run_fake_github,
    )
)


# --- the commands about a bot of the current directory: register, dev, receive ---------


def _bot_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bot",
        default=os.environ.get("GHBOT_BOT") or None,
        help="the bot class, module:Class (default: GHBOT_BOT)",
    )


def _need_bot(args: argparse.Namespace) -> None:
    """Check `--bot` was given; make the current directory's modules importable."""
    if not args.bot:
        raise ConfigError("which bot? pass --bot package.module:ClassName (or set GHBOT_BOT)")
    # The bot is the caller's code, importable from where they run the command.
    sys.path.insert(0, os.getcwd())


# --- ghbot new --------------------------------------------------------------------------


def _new_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the project's name, e.g. my-bot (package my_bot)")
    parser.add_argument(
        "--dir", type=Path, default=Path("."), help="where to create it (default: here)"
    )


def _run_new(args: argparse.Namespace) -> int:
    from ghbot.scaffold import new_project, package_name

    root = new_project(args.name, args.dir)
    package = package_name(args.name)
    print(f"created {root}: {package}/bot.py, tests/test_bot.py, pyproject.toml, README.md")
    print("next:")
    print(f"  cd {root}")
    print("  python -m venv .venv && .venv/bin/pip install -e '.[dev]' && .venv/bin/pytest")
    return 0


register(
    Command(
        "new",
        "Create a bot project (a bot, its tests, pyproject.toml) whose tests pass at once.",
        _new_arguments,
        _run_new,
    )
)


# --- ghbot register ---------------------------------------------------------------------


def _register_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    _bot_argument(parser)
    add("--name", required=True, help="the App's name (GitHub lets you change it there)")
    add("--webhook-url", required=True, help="where GitHub sends deliveries (…/webhooks)")
    add("--org", help="create the App in this organization (default: your account)")
    add("--github-url", default="https://github.com", help="GitHub's web address (GHES)")
    add("--api-url", default="https://api.github.com", help="GitHub's API (GHES: …/api/v3)")
    add("--env-file", type=Path, default=Path(".env"), help="where to write the settings")
    add("--port", type=int, default=0, help="the local page's port (default: any free one)")
    add("--no-browser", action="store_true", help="print the page's address, do not open it")


def _run_register(args: argparse.Namespace) -> int:
    """Create the App from the bot's manifest through the browser; write its settings."""
    _need_bot(args)
    import webbrowser

    from actors.register import Registration
    from actors.settings import load_bot

    bot = load_bot(args.bot)

    async def register() -> dict[str, Any]:
        flow = await Registration(
            bot,
            name=args.name,
            webhook_url=args.webhook_url,
            env_file=args.env_file,
            web_url=args.github_url,
            api_url=args.api_url,
            org=args.org,
            port=args.port,
        ).start()
        manifest = flow.manifest()
        print(f"events: {', '.join(manifest['default_events']) or 'none'}")
        permissions = manifest["default_permissions"].items()
        print(f"permissions: {', '.join(f'{k}: {v}' for k, v in permissions) or 'none'}")
        print(f"open {flow.url}/ in a browser to create the App on GitHub", flush=True)
        if not args.no_browser:
            webbrowser.open(f"{flow.url}/")
        try:
            return await flow.wait()
        finally:
            await flow.close()

    app = asyncio.run(register())
    print(f"created the App {app.get('name')} (ID {app.get('id')}): {app.get('html_url')}")
    print(f"wrote {args.env_file} and the private key beside it (both mode 0600)")
    print(f"install it on a repository: {app.get('html_url')}/installations/new")
    return 0


register(
    Command(
        "register",
        "Create the bot's GitHub App from a manifest (events from its handlers) in the "
        "browser, and write its ID, key and webhook secret to .env.",
        _register_arguments,
        _run_register,
    )
)


# --- ghbot dev --------------------------------------------------------------------------


def _dev_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    _bot_argument(parser)
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=3000, help="port to listen on (default 3000)")
    add("--env-file", type=Path, default=Path(".env"), help="settings to load (default .env)")
    add(
        "--journal",
        type=Path,
        default=Path("data") / "dev-journal",
        help="the dev server's own journal directory (default data/dev-journal)",
    )
    add("--proxy", help="a webhook proxy channel to pull deliveries from (https://smee.io/…)")
    add("--no-reload", action="store_true", help="do not restart when a .py file changes")


def _run_dev(args: argparse.Namespace) -> int:
    """Serve the bot on POST /webhooks in this process; restart it when code changes."""
    _need_bot(args)
    if not args.env_file.is_file() and args.env_file != Path(".env"):
        raise ConfigError(f"{args.env_file}: no such file")
    if not args.no_reload:
        return _reloading(args)
    from actors.dev import DevServer, load_env_file, relay

    # Read here, in the server's own process, so an edited .env takes effect on restart.
    if args.env_file.is_file():
        os.environ.update(load_env_file(args.env_file))
    from actors.settings import load_bot
    from ghbot.config import Settings
    from ghbot.logs import configure

    bot = load_bot(args.bot)
    settings = Settings.from_env()
    configure("INFO", "text")
    _stop_on_sigterm()  # so the server closes its journal and port, as on Ctrl-C

    async def serve() -> None:
        server = await DevServer(
            bot, settings, journal_dir=args.journal, host=args.host, port=args.port
        ).start()
        print(f"ghbot dev: {args.bot} on {server.url}/webhooks", flush=True)
        tasks = []
        if args.proxy:
            target = f"{server.url}/webhooks"
            tasks.append(asyncio.create_task(relay(args.proxy, target)))
            print(f"ghbot dev: relaying {args.proxy}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()
            await server.close()

    asyncio.run(serve())
    return 0


def _reloading(args: argparse.Namespace) -> int:
    """Run the server in a child process; start a new one whenever a .py file changes.

    SIGTERM, like Ctrl-C, stops the child first, then this process.
    """
    import subprocess
    import time

    _stop_on_sigterm()
    argv = [sys.executable, "-m", "ghbot.cli", "dev", "--no-reload", "--bot", args.bot]
    argv += ["--host", args.host, "--port", str(args.port), "--journal", str(args.journal)]
    argv += ["--env-file", str(args.env_file)] + (["--proxy", args.proxy] if args.proxy else [])
    root = Path.cwd()
    child: subprocess.Popen[bytes] | None = None
    try:
        while True:
            seen = _sources(root, args.env_file)
            child = subprocess.Popen(argv)  # noqa: S603 - this interpreter, our arguments
            while child.poll() is None and _sources(root, args.env_file) == seen:
                time.sleep(0.5)
            if child.poll() is None:
                print("ghbot dev: code changed; restarting", flush=True)
                child.terminate()
                child.wait()
                continue
            # The server stopped by itself (a syntax error, a bad setting): wait for a fix.
            print(f"ghbot dev: the server exited ({child.returncode}); waiting for a change")
            while _sources(root, args.env_file) == seen:
                time.sleep(0.5)
    except KeyboardInterrupt:
        if child is not None and child.poll() is None:
            child.terminate()
            child.wait()
        return 0


def _stop_on_sigterm() -> None:
    """Make SIGTERM stop this process the way Ctrl-C does (a `KeyboardInterrupt`)."""
    import signal

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _sources(root: Path, env_file: Path) -> dict[str, float]:
    """Return the modification time of each .py file under `root` (venvs and data
    skipped) and of the settings file."""
    skip = {".venv", "venv", ".git", "data", "__pycache__", "node_modules"}
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        found[str(env_file)] = env_file.stat().st_mtime
    for directory, names, files in os.walk(root):
        names[:] = [n for n in names if n not in skip and not n.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with contextlib.suppress(OSError):
                    found[path] = os.stat(path).st_mtime
    return found


register(
    Command(
        "dev",
        "Run a bot in this process (no Ray) on POST /webhooks, with .env loaded, "
        "restarting on code changes; --proxy pulls deliveries from smee.io.",
        _dev_arguments,
        _run_dev,
    )
)


# --- ghbot receive ----------------------------------------------------------------------


def _receive_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "event",
        help="the X-GitHub-Event header (issues); with no PAYLOAD, an event and action "
        "(issues.opened) whose example payload ships with ghbot",
    )
    add("payload", nargs="?", type=Path, help="the delivery's JSON body, a file")
    _bot_argument(parser)
    add(
        "--installation",
        type=int,
        default=1,
        help="the installation a payload without one is for (default 1)",
    )


def _run_receive(args: argparse.Namespace) -> int:
    """Run one delivery through the bot in-process; print what it asked of GitHub."""
    _need_bot(args)
    from actors.settings import load_bot
    from actors.testing import REPOSITORY, BotHarness

    bot = load_bot(args.bot)
    data: dict[str, Any] | None = None
    installation, repository = args.installation, REPOSITORY
    if args.payload is not None:
        try:
            data = json.loads(args.payload.read_bytes())
        except ValueError as exc:
            raise ConfigError(f"{args.payload} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{args.payload}: a webhook payload is a JSON object")
        found = data.get("installation")
        if isinstance(found, dict) and isinstance(found.get("id"), int):
            installation = found["id"]
        else:
            data["installation"] = {"id": installation}
        repo = data.get("repository")
        if isinstance(repo, dict) and "/" in str(repo.get("full_name", "")):
            repository = str(repo["full_name"])

    async def receive() -> Any:
        async with BotHarness(bot, installation_id=installation, repository=repository) as h:
            return await h.deliver(args.event, data)

    done = asyncio.run(receive())
    print(f"delivery {done.delivery_id} ({args.event}): {done.status}")
    for request in done.requests:
        body = "" if request.json is None else " " + json.dumps(request.json)
        print(f"  {request.method} {request.path}{body}")
    if not done.requests:
        print("  no request to GitHub")
    for event in done.domain_events:
        print(f"  domain event {event!r}")
    for dead in done.dead_letters:
        print(
            f"  dead letter: {dead['handler']} after {dead['attempts']} attempts: "
            f"{dead['error_type']}: {dead['error']}"
        )
    return 1 if done.dead_letters else 0


register(
    Command(
        "receive",
        "Run one webhook delivery through a bot in this process (no Ray), against a fake "
        "GitHub, and print the requests it made.",
        _receive_arguments,
        _run_receive,
    )
)


# --- operating a running deployment: ghbot status, ghbot dead-letters --------------------
#
# These connect to the Ray cluster as a driver, find the deployment's shard actors by
# name in its namespace (`actors.admin`), and disconnect. Ray is imported inside them,
# so `import ghbot.cli` (and `ghbot fake-github`) never imports Ray. When the caller
# has connected already (`ray.is_initialized()`: a test, a notebook), they use that
# connection and leave it open.

PROBE_TIMEOUT = 3.0
"""Seconds to wait for the cluster's GCS port to accept a connection before giving up."""

AUTH_MODE = "RAY_AUTH_MODE"
"""Ray's switch for token authentication: `token`, `disabled`, or unset."""

_PRINTED_BY = "`ray get-auth-token` prints it, as the user who started the cluster, on its head"


class ClusterError(GhBotError):
    """No Ray cluster answers at the address (none found for `auto`), or its actors failed."""


def _cluster_arguments(parser: argparse.ArgumentParser, *, json_instead_of: str = "") -> None:
    """Add --address and --namespace; and --json when the command prints `json_instead_of`."""
    add = parser.add_argument
    add(
        "--address",
        help="the Ray cluster: HOST:PORT of its head (GCS), ray://HOST:PORT, or auto "
        "(the cluster started on this machine); default: RAY_ADDRESS, else auto",
    )
    add(
        "--namespace",
        default=os.environ.get("GHBOT_NAMESPACE") or "ghbot",
        help="the deployment's Ray namespace (default: GHBOT_NAMESPACE, else ghbot)",
    )
    if json_instead_of:
        add("--json", action="store_true", help=f"print JSON instead of {json_instead_of}")


def _probe(address: str) -> str:
    """Resolve `address` as `ray.init` would and check that something listens there.

    Return the address to pass to `ray.init`. Raise `ClusterError` within
    about `PROBE_TIMEOUT` seconds when nothing does: `ray.init` itself would retry
    for minutes.
    """
    if address.startswith("ray://"):
        resolved = address
        host_port = address[len("ray://") :]
    else:
        from ray._private.services import canonicalize_bootstrap_address

        try:
            found = canonicalize_bootstrap_address(address)
        except (ConnectionError, ValueError) as exc:
            raise ClusterError(f"no Ray cluster found ({exc})") from None
        if found is None:
            raise ClusterError("no Ray cluster found; pass --address HOST:PORT")
        resolved = host_port = found
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), PROBE_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        shown = address if resolved == address else f"{address} ({resolved})"
        raise ClusterError(f"no Ray cluster answers at {shown}: {reason}") from None
    return resolved


@contextlib.contextmanager
def _connected(args: argparse.Namespace) -> Iterator[None]:
    """Be connected to the cluster for the block: reuse a connection, or make one."""
    import ray
    from ray.exceptions import RayError

    if ray.is_initialized():
        with _one_line_ray_errors(RayError):
            yield
        return
    # `ray.init` prefers RAY_ADDRESS to its argument; an explicit --address wins here.
    chosen = args.address or os.environ.get("RAY_ADDRESS") or "auto"
    saved = os.environ.get("RAY_ADDRESS")
    if chosen != "auto":
        os.environ["RAY_ADDRESS"] = chosen
    try:
        address = _probe(chosen)
        _authenticate(address, chosen)
        ray.init(
            address=address,
            namespace=args.namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, RayError) as exc:
        # RuntimeError: a Ray version mismatch; RayError: a missing or wrong auth token.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"cannot connect to the Ray cluster at {chosen}: {first}") from None
    finally:
        if saved is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved
    try:
        with _one_line_ray_errors(RayError):
            yield
    finally:
        ray.shutdown()


def _authenticate(address: str, shown: str) -> None:
    """Settle Ray's token authentication for `address` before `ray.init` tries it.

    Ray 2.60 starts a local cluster (`serve run`, `ray start`) with token
    authentication on, its token in ~/.ray/auth_token; but a driver that names the
    cluster's address sends the token only under RAY_AUTH_MODE=token, and is refused
    after twenty seconds of retries otherwise. So when RAY_AUTH_MODE is unset, the
    cluster runs on this machine and a token is at hand, this process turns token mode
    on, as `ray.init(address="auto")` itself would. A cluster elsewhere gets the token
    only under RAY_AUTH_MODE=token. Then it asks the cluster once and raises
    `ClusterError` saying what to do when the cluster refuses this process.
    A Ray Client address (`ray://`) is left to Ray.
    """
    if address.startswith("ray://"):
        return
    # Ray's own helpers (private in 2.60; `ray.init(address="auto")` uses them).
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    found = bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))
    local = _on_this_machine(address.rpartition(":")[0])
    mode = os.environ.get(AUTH_MODE)
    if mode is None and found and local:
        os.environ[AUTH_MODE] = mode = "token"
        Config.initialize("")  # Ray read its settings at import; have it read them again
    sending = (mode or "").lower() == "token"
    # Token mode without a token: Ray would abort this process asking, so don't ask.
    if (sending and not found) or _refuses(address):
        advice = _auth_advice(shown, mode=mode, sending=sending, found=found, local=local)
        raise ClusterError(advice)


def _on_this_machine(host: str) -> bool:
    """Tell whether `host` (a name or an IP address) is one of this machine's addresses."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        if ipaddress.ip_address(ip).is_loopback:
            return True
        # Binding works only to an address of this machine.
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((ip, 0))
            except OSError:
                continue
            return True
    return False


def _refuses(address: str) -> bool:
    """Ask the cluster's GCS once whether it takes this process's credentials.

    Anything but an authentication refusal counts as not refused: `ray.init` reports it.
    Ray's C++ client logs the refusal on stderr as well; that line is dropped.
    """
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.exceptions import AuthenticationError

    try:
        with _stderr_dropped():
            GcsClient(address=address, cluster_id=None)
    except AuthenticationError:
        return True
    except Exception:  # noqa: S110 - ray.init, next, says what else is wrong
        pass
    return False


@contextlib.contextmanager
def _stderr_dropped() -> Iterator[None]:
    """Send file descriptor 2 (where Ray's C++ code logs) nowhere for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _auth_advice(shown: str, *, mode: str | None, sending: bool, found: bool, local: bool) -> str:
    """Say why the cluster at `shown` refuses this process and what to do about it.

    `mode` is RAY_AUTH_MODE here, `sending` whether a token was offered, `found`
    whether Ray finds one here, `local` whether the cluster runs on this machine.
    """
    what = f"the Ray cluster at {shown}"
    if sending and found:
        return (
            f"{what} refused the Ray token found here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH "
            f"or ~/.ray/auth_token): set RAY_AUTH_TOKEN to the cluster's token ({_PRINTED_BY})"
        )
    what += " requires Ray's authentication token"
    if not found:
        fix = f"set RAY_AUTH_TOKEN to the cluster's token ({_PRINTED_BY})"
        if local:
            fix = "run ghbot as the user who started the cluster, or " + fix
        elif not sending:
            fix += " and RAY_AUTH_MODE=token"
        return f"{what} and none was found here: {fix}"
    if mode is not None:
        return f"{what}, and RAY_AUTH_MODE={mode} here: unset RAY_AUTH_MODE"
    return (
        f"{what}; ghbot sends the token found here unasked only to a cluster on this "
        f"machine: set RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN to the cluster's token "
        f"unless ~/.ray/auth_token holds it ({_PRINTED_BY})"
    )


@contextlib.contextmanager
def _one_line_ray_errors(error: type[Exception]) -> Iterator[None]:
    """Turn a Ray failure in the block (a shard died, a call failed) into a `ClusterError`."""
    try:
        yield
    except error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ClusterError(f"the deployment did not answer: {type(exc).__name__} {first}") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print left-aligned columns, two spaces apart, under upper-case headers."""
    cells = [[str(h).upper() for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _cluster_arguments(parser, json_instead_of="a table")


def _run_status(args: argparse.Namespace) -> int:
    """Print each shard's counters; exit 0 (2 if no cluster or no deployment)."""
    from actors import admin

    with _connected(args):
        admin.require_shards(args.namespace)
        found = admin.stats(args.namespace)
    if args.json:
        _print_json(found)
        return 0
    columns = ["index", "received", "duplicates", "active", "busy", "open_breakers"]
    columns += ["activations", "passivations", "snapshots"]
    _print_table(["shard", *columns[1:]], [[s.get(c, "") for c in columns] for s in found])
    return 0


def _dead_letters_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list", help="list the dead letters, oldest first", description="List the dead letters."
    )
    _cluster_arguments(listing, json_instead_of="a table")
    replay = actions.add_parser(
        "replay",
        help="run a dead letter's handlers again",
        description="Run a delivery's dead-lettered handlers again, from attempt 1.",
    )
    replay.add_argument("delivery_id", metavar="DELIVERY_ID", help="the delivery's GUID")
    replay.add_argument("--handler", help="replay only this handler (default: every one)")
    _cluster_arguments(replay)


def _run_dead_letters(args: argparse.Namespace) -> int:
    """`list`: print them, exit 0. `replay`: exit 0 if any was replayed, 1 if none matched.

    Exit 2 (one line on stderr) when no cluster is reachable or the namespace has no
    deployment.
    """
    from actors import admin

    with _connected(args):
        admin.require_shards(args.namespace)
        if args.action == "list":
            return _list_dead_letters(admin.dead_letters(args.namespace), args.json)
        replayed = admin.replay(args.namespace, args.delivery_id, args.handler)
    if replayed == 0:
        which = f" for handler {args.handler!r}" if args.handler else ""
        print(f"ghbot: no dead letter of delivery {args.delivery_id}{which}", file=sys.stderr)
        return 1
    print(f"replayed {replayed} handler(s) of delivery {args.delivery_id}")
    return 0


def _redeliver_arguments(parser: argparse.ArgumentParser) -> None:
    _cluster_arguments(parser, json_instead_of="a summary")


def _run_redeliver(args: argparse.Namespace) -> int:
    """Sweep now; exit 0 (2 if no cluster or no deployment, or GitHub refused the listing)."""
    from actors import admin

    with _connected(args):
        admin.require_shards(args.namespace)
        found = admin.sweep(args.namespace)
    if args.json:
        _print_json(found)
        return 0
    print(
        f"{found['listed']} delivery attempts listed, {found['failed']} deliveries failed, "
        f"{found['held']} of them journaled anyway; asked GitHub to redeliver "
        f"{len(found['redelivered'])}, gave up on {len(found['gave_up'])}"
    )
    for guid in found["redelivered"]:
        print(f"redelivered {guid}")
    for guid in found["gave_up"]:
        print(f"gave up on {guid}")
    return 0


def _list_dead_letters(found: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        _print_json(found)
        return 0
    if not found:
        print("no dead letters")
        return 0
    headers = ["delivery", "event", "installation", "handler", "attempts", "error", "at"]
    rows = [
        [
            d["delivery_id"],
            d.get("event", ""),
            d.get("installation_id", ""),
            d["handler"],
            d["attempts"],
            _one_line(f"{d['error_type']}: {d['error']}", 60),
            _when(d["at"]),
        ]
        for d in found
    ]
    _print_table(headers, rows)
    return 0


register(
    Command(
        "status",
        "Show a running deployment's shards: deliveries received, installations active, "
        "open breakers.",
        _status_arguments,
        _run_status,
    )
)
register(
    Command(
        "dead-letters",
        "List a running deployment's dead letters, or replay one.",
        _dead_letters_arguments,
        _run_dead_letters,
    )
)
register(
    Command(
        "redeliver",
        "Sweep now for webhook deliveries GitHub failed to deliver and that the journal "
        "lacks, and ask GitHub to redeliver them (the deployment also does this on its own).",
        _redeliver_arguments,
        _run_redeliver,
    )
)


if __name__ == "__main__":
    sys.exit(main())
