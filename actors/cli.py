"""The CLI's commands about a bot of the current directory, run without Ray.

`ghbot register` (the bot's GitHub App, from a manifest: `actors.register`), `ghbot
dev` (the bot on `POST /webhooks` in one process: `actors.dev`) and `ghbot receive`
(one delivery through the bot, against a fake GitHub: `actors.testing`). They plug
into `ghbot`'s command line through the `ghbot.cli` entry point (see `ghbot.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from ghbot.cli import Command, port, register
from ghbot.errors import ConfigError

__all__: list[str] = []


# --- the commands about a bot of the current directory: register, dev, receive ---------


def _bot_argument(parser: argparse.ArgumentParser, *, env_file: bool = False) -> None:
    where = "GHBOT_BOT, from the environment or the --env-file" if env_file else "GHBOT_BOT"
    parser.add_argument(
        "--bot",
        default=os.environ.get("GHBOT_BOT") or None,
        help=f"the bot class, module:Class (default: {where})",
    )


def _need_bot(bot: str | None, where: str = "set GHBOT_BOT") -> str:
    """Return `bot` (`--bot`, else what `where` says to set); make the current
    directory's modules importable. `ConfigError` when it is not given."""
    if not bot:
        raise ConfigError(f"which bot? pass --bot package.module:ClassName (or {where})")
    # The bot is the caller's code, importable from where they run the command.
    sys.path.insert(0, os.getcwd())
    return bot


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
    add("--port", type=port, default=0, help="the local page's port (default: any free one)")
    add("--no-browser", action="store_true", help="print the page's address, do not open it")


def _run_register(args: argparse.Namespace) -> int:
    """Create the App from the bot's manifest through the browser; write its settings."""
    _need_bot(args.bot)
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
    _bot_argument(parser, env_file=True)
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=port, default=3000, help="port to listen on (default 3000)")
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
    """Serve the bot on POST /webhooks in this process; restart it when code changes.

    The bot is `--bot`, else `GHBOT_BOT` from the environment, else from the `.env` file.
    """
    if not args.env_file.is_file() and args.env_file != Path(".env"):
        raise ConfigError(f"{args.env_file}: no such file")
    from actors.dev import DevServer, load_env_file, relay

    # Read in the server's own process too, so an edited .env takes effect on restart.
    dotenv = load_env_file(args.env_file) if args.env_file.is_file() else {}
    bot_path = _need_bot(
        args.bot or dotenv.get("GHBOT_BOT"), f"set GHBOT_BOT, in {args.env_file} too"
    )
    if not args.no_reload:
        return _reloading(args)
    os.environ.update(dotenv)
    from actors.settings import dedup_window, load_bot, max_concurrent_requests, pace_writes
    from ghbot.config import Settings
    from ghbot.logs import configure

    bot = load_bot(bot_path)
    settings = Settings.from_env()
    window = dedup_window(settings.api_url, os.environ.get("GHBOT_DEDUP_WINDOW", ""))
    paced = pace_writes(os.environ.get("GHBOT_PACE_WRITES", ""))
    requests = max_concurrent_requests(os.environ.get("GHBOT_MAX_CONCURRENT_REQUESTS", ""))
    # `LOG_LEVEL` as set; lines of text for a terminal unless `LOG_FORMAT` asks for JSON.
    configure(settings.log_level, settings.log_format if "LOG_FORMAT" in os.environ else "text")

    async def serve() -> None:
        # SIGTERM stops the server as Ctrl-C does, closing its journal and port. Through
        # the loop, not `signal.signal`: the kernel may hand the signal to one of the
        # journal's threads, and a Python handler then waits for the main thread, which
        # an idle loop keeps asleep in `select` (the server never stopped).
        stopped = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
        server = await DevServer(
            bot,
            settings,
            journal_dir=args.journal,
            host=args.host,
            port=args.port,
            dedup_window=window,
            pace_writes=paced,
            max_concurrent_requests=requests,
        ).start()
        print(f"ghbot dev: {bot_path} on {server.url}/webhooks", flush=True)
        tasks = []
        if args.proxy:
            target = f"{server.url}/webhooks"
            tasks.append(asyncio.create_task(relay(args.proxy, target)))
            print(f"ghbot dev: relaying {args.proxy}", flush=True)
        try:
            await stopped.wait()
        finally:
            for task in tasks:
                task.cancel()
            await server.close()

    asyncio.run(serve())
    return 0


def _reloading(args: argparse.Namespace) -> int:
    """Run the server in a child process; start a new one whenever a .py file changes.

    SIGTERM, like Ctrl-C, stops the child first, then this process. A bot not given by
    `--bot` or the environment the child reads from `.env`, each time.
    """
    import subprocess
    import time

    _stop_on_sigterm()
    argv = [sys.executable, "-m", "ghbot.cli", "dev", "--no-reload"]
    argv += ["--bot", args.bot] if args.bot else []
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
    """Return the modification time of each .py file under `root` and of the settings
    file. Skipped: hidden directories, `data`, `__pycache__`, `node_modules`, and
    virtual environments whatever their name (a directory holding `pyvenv.cfg`)."""
    skip = {"data", "__pycache__", "node_modules"}
    found: dict[str, float] = {}
    with contextlib.suppress(OSError):
        found[str(env_file)] = env_file.stat().st_mtime
    for directory, names, files in os.walk(root):
        names[:] = [
            n
            for n in names
            if n not in skip
            and not n.startswith(".")
            and not os.path.exists(os.path.join(directory, n, "pyvenv.cfg"))
        ]
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
        "(issues.opened) whose example payload ships with ghbot (or a sibling's: the "
        "same event's, action replaced)",
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
    _need_bot(args.bot)
    from actors.settings import load_bot
    from actors.testing import REPOSITORY, BotHarness
    from ghbot.testing.payloads import sibling_example

    bot = load_bot(args.bot)
    data: dict[str, Any] | None = None
    installation, repository = args.installation, REPOSITORY
    if args.payload is None and (sibling := sibling_example(args.event)) is not None:
        action = args.event.partition(".")[2]
        print(
            f"ghbot: no example payload of {args.event}: {sibling}'s, with action {action!r}",
            file=sys.stderr,
        )
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
