"""Write a filled-in copy of cluster.yaml for your machines, after checking it.

    python scripts/cluster_config.py --head-ip 10.0.0.10 --worker-ip 10.0.0.11 \\
        --ssh-user ubuntu --ssh-key ~/.ssh/id_ed25519 \\
        --bot-dir ../my-bot --env-file ~/ghbot-cluster.env -o my-cluster.yaml

cluster.yaml's values marked YOURS (the machines, the SSH user and key, your bot's
project, your settings file) are replaced; everything else is kept. Local paths become
absolute, so `ray up my-cluster.yaml` works from any directory. Before writing, every
problem found offline is listed at once (exit 2): a key or file that is missing, a
settings file others may read or that lacks a required setting, a bot directory
without pyproject.toml, no Ray token, an SQLite journal. Nothing connects anywhere.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
REQUIRED = ("GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "GHBOT_JOURNAL_URL", "GHBOT_BOT")


def read_env_file(path: Path) -> dict[str, str]:
    """Return the KEY=VALUE assignments of a shell-syntax settings file (no expansion)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        match = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", line)
        if match:
            words = shlex.split(match.group(2) or "''")
            found[match.group(1)] = words[0] if words else ""
    return found


def check(args: argparse.Namespace) -> list[str]:
    """Return every problem with the arguments, as one line each."""
    problems: list[str] = []
    key = Path(args.ssh_key).expanduser()
    if not key.is_file():
        problems.append(f"--ssh-key {args.ssh_key}: no such file")
    bot = Path(args.bot_dir).expanduser()
    if not (bot / "pyproject.toml").is_file():
        problems.append(
            f"--bot-dir {args.bot_dir}: no pyproject.toml there (`ghbot new my-bot` makes one)"
        )
    token = Path(args.auth_token).expanduser()
    if not token.is_file():
        problems.append(
            f"--auth-token {args.auth_token}: no such file; create Ray's token once with "
            "`ray get-auth-token --generate`"
        )
    env = Path(args.env_file).expanduser()
    if not env.is_file():
        problems.append(
            f"--env-file {args.env_file}: no such file (deploy/cluster.env.example shows one)"
        )
    else:
        mode = stat.S_IMODE(env.stat().st_mode)
        if mode & 0o077:
            problems.append(
                f"--env-file {args.env_file}: mode {mode:04o}, others may read its secrets; "
                f"chmod 600 {args.env_file}"
            )
        settings = read_env_file(env)
        missing = [name for name in REQUIRED if not settings.get(name)]
        if not (settings.get("GITHUB_APP_ID") or settings.get("GITHUB_CLIENT_ID")):
            missing.insert(0, "GITHUB_APP_ID (or GITHUB_CLIENT_ID)")
        if missing:
            problems.append(f"--env-file {args.env_file}: sets no {', '.join(missing)}")
        journal = settings.get("GHBOT_JOURNAL_URL", "")
        if journal and not journal.startswith(("postgresql://", "postgres://")):
            problems.append(
                f"--env-file {args.env_file}: GHBOT_JOURNAL_URL must be postgresql://… on a "
                "cluster (an SQLite journal is one machine's file)"
            )
    for mount in args.mount:
        remote, sep, local = mount.partition("=")
        if not sep or not remote or not local:
            problems.append(f"--mount {mount!r}: expected REMOTE=LOCAL")
        elif not Path(local).expanduser().exists():
            problems.append(f"--mount {mount}: {local}: no such file or directory")
    return problems


def filled_in(args: argparse.Namespace) -> dict[str, Any]:
    """Return cluster.yaml's configuration with the arguments in place of its YOURS values."""
    config: dict[str, Any] = yaml.safe_load(CLUSTER_YAML.read_text())
    if args.cluster_name:
        config["cluster_name"] = args.cluster_name
    config["provider"]["head_ip"] = args.head_ip
    config["provider"]["worker_ips"] = list(args.worker_ip)
    config["max_workers"] = len(args.worker_ip)
    config["auth"] = {
        "ssh_user": args.ssh_user,
        "ssh_private_key": str(Path(args.ssh_key).expanduser().resolve()),
    }

    def local(path: str) -> str:
        return str(Path(path).expanduser().resolve())

    mounts = {
        "~/ghbot-src": str(ROOT),
        "~/bot-src": local(args.bot_dir),
        "~/ghbot.env": local(args.env_file),
        "~/.ray/auth_token": local(args.auth_token),
    }
    for mount in args.mount:
        remote, _, path = mount.partition("=")
        mounts[node_path(remote)] = local(path)
    config["file_mounts"] = mounts
    return config


def node_path(remote: str) -> str:
    """Return a mount's REMOTE as a path on the nodes: one under this machine's home is
    a `~` the shell expanded here (`--mount ~/a.pem=...` unquoted), and goes back to
    `~/`, the SSH user's home there."""
    home = os.path.expanduser("~").rstrip("/")
    if home and remote.startswith(home + "/"):
        return "~/" + remote[len(home) + 1 :]
    return remote


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-ip", required=True, help="the head machine's address")
    parser.add_argument(
        "--worker-ip", action="append", default=[], help="a worker machine's address (repeat)"
    )
    parser.add_argument("--ssh-user", required=True, help="the user ray up logs in as")
    parser.add_argument("--ssh-key", required=True, help="its private key (local path)")
    parser.add_argument("--bot-dir", required=True, help="your bot's project (pyproject.toml)")
    parser.add_argument("--env-file", required=True, help="the settings file (mode 0600)")
    parser.add_argument(
        "--auth-token", default="~/.ray/auth_token", help="Ray's token (default %(default)s)"
    )
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="REMOTE=LOCAL",
        help="one more file to copy to every node, e.g. '~/github-app.pem=./my-app.pem'"
        " (REMOTE on the nodes: ~ is the SSH user's home there)",
    )
    parser.add_argument("--cluster-name", help="another cluster_name than cluster.yaml's")
    parser.add_argument("-o", "--output", help="where to write (default: standard output)")
    args = parser.parse_args(argv)
    problems = check(args)
    if problems:
        print("cluster_config.py: nothing written:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2
    text = (
        f"# Written by scripts/cluster_config.py from {CLUSTER_YAML}; see the comments "
        "there.\n" + yaml.safe_dump(filled_in(args), sort_keys=False, width=100)
    )
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
