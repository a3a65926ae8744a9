"""`ghbot status` and `ghbot dead-letters`, without a cluster: arguments, output, errors.

Nothing here starts or joins Ray: the unreachable cases fail at the CLI's probe, and
the output cases replace `actors.ray.admin` and the connection with fakes. The same
commands on a live deployment are in tests/cluster/test_cli.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.ray import cli as cluster_cli
from actors.ray import connection
from ghbot import cli
from ghbot.errors import UsageError

DEAD: dict[str, Any] = {
    "delivery_id": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    "event": "issues",
    "installation_id": 1003,
    "handler": "welcome",
    "attempts": 3,
    "error_type": "ServerError",
    "error": "GitHub answered 502\nBad Gateway " + "x" * 80,
    "at": 1_700_000_000.0,
    "shard": 1,
}


def test_importing_the_cli_and_asking_for_help_never_imports_ray() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from ghbot import cli\n"
        "argvs = (['--help'], ['dead-letters', '--help'], ['status', '--help'], ['serve-env'])\n"
        "for argv in argvs:\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        cli.main(argv)\n"
        "assert 'ray' not in sys.modules, 'ghbot.cli imported ray'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_serve_env_prints_exports_a_shell_takes_for_the_cores() -> None:
    """`eval "$(ghbot serve-env)"`, as README and cluster.yaml run it: the installed
    script's output, evaluated by bash, puts the settings in Ray's environment."""
    from actors.ray.deploy import serve_environment

    ghbot = Path(sys.executable).with_name("ghbot")
    script = f'eval "$({ghbot} serve-env --cores 2)"; env'
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    environ = dict(line.split("=", 1) for line in shown.stdout.splitlines() if "=" in line)
    expected = serve_environment(2)
    assert {name: environ.get(name) for name in expected} == expected
    assert (
        expected["RAY_SERVE_ENABLE_HA_PROXY"] == expected["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    )
    assert expected["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    # Serve's controller keeps its own pace: a slower one replaces a lost replica later.
    assert "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" not in expected
    # HAProxy's threads: half the cores, 1 to 4; this machine's by default.
    threads = [serve_environment(n)["RAY_SERVE_HAPROXY_NBTHREAD"] for n in (1, 2, 3, 4, 6, 8, 64)]
    assert threads == ["1", "1", "1", "2", "3", "4", "4"]
    assert serve_environment() == serve_environment(os.cpu_count())


def test_serve_env_refuses_a_wrong_core_count(capsys: pytest.CaptureFixture[str]) -> None:
    for wrong in ("0", "two"):
        with pytest.raises(SystemExit) as exited:
            cli.main(["serve-env", "--cores", wrong])
        assert exited.value.code == 2
        assert f"not a number of cores: {wrong!r}" in capsys.readouterr().err


def test_the_commands_are_registered() -> None:
    help_text = cli.build_parser().format_help()  # loads the plugins' commands
    assert {"fake-github", "status", "dead-letters", "redeliver", "serve-env"} <= set(cli._COMMANDS)
    assert "dead-letters" in help_text and "status" in help_text


def test_arguments_and_their_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GHBOT_NAMESPACE", raising=False)
    parse = cli.build_parser().parse_args
    args = parse(["dead-letters", "list"])
    assert (args.action, args.address, args.namespace, args.json) == ("list", None, "ghbot", False)
    args = parse(["dead-letters", "replay", "guid-1", "--handler", "welcome", "--namespace", "n"])
    assert (args.action, args.delivery_id, args.handler, args.namespace) == (
        "replay",
        "guid-1",
        "welcome",
        "n",
    )
    args = parse(["status", "--address", "10.0.0.1:6379", "--json"])
    assert (args.address, args.json) == ("10.0.0.1:6379", True)
    monkeypatch.setenv("GHBOT_NAMESPACE", "bots")
    assert cli.build_parser().parse_args(["status"]).namespace == "bots"


def test_bot_help_names_the_env_file_only_where_it_is_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ghbot dev` reads GHBOT_BOT from `--env-file` too; `register` and `receive` don't."""
    for command, reads_env_file in (("dev", True), ("register", False), ("receive", False)):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())
        assert ("from the environment or the --env-file" in shown) is reads_env_file, command


@pytest.mark.parametrize(
    "argv",
    [["dead-letters"], ["dead-letters", "replay"], ["dead-letters", "purge"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "usage: ghbot dead-letters" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stop", "--drain-timeout", "-1"], "'-1' is not a number of seconds"),
        (["stop", "--drain-timeout", "0"], "'0' is not a positive number of seconds"),
        (["stop", "--drain-timeout", "nan"], "'nan' is not a number of seconds"),
        (["status", "--namespace", ""], "a Ray namespace is not empty"),
        (["dev", "--bot", "m:B", "--port", "70000"], "'70000' is not a port"),
        (["register", "--bot", "m:B", "--port", "-1"], "'-1' is not a port"),
        (["fake-github", "--port", "2²"], "'2²' is not a port"),
    ],
)
def test_arguments_out_of_range_are_refused_by_the_parser(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A drain of -1 s cut the running handlers at once (their writes then repeated),
    port 70000 raised `OverflowError` (or bound another port, given a host name), an
    empty namespace Ray's `ValueError`: all tracebacks or worse."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and said in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["dead-letters", "list", "--address", "127.0.0.1:1"], "no Ray cluster answers at"),
        (["dead-letters", "replay", "g", "--address", "127.0.0.1:1"], "no Ray cluster answers"),
        (["status", "--address", "127.0.0.1:1", "--json"], "no Ray cluster answers at"),
        (["status", "--address", "no-port-here"], "no Ray cluster found"),
    ],
)
def test_no_cluster_is_one_line_and_exit_2_at_once(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    reached: list[str] = []

    def init(*args: object, **kwargs: object) -> None:
        reached.append(str(kwargs.get("address")))
        raise ConnectionError("ray.init would retry for minutes")

    monkeypatch.setattr(ray, "init", init)
    assert cli.main(argv) == 2
    assert reached == []  # refused before ray.init, which alone would retry for minutes
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ghbot: error: ") and message in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1


def test_this_machine_is_told_from_others() -> None:
    assert connection._on_this_machine("127.0.0.1") and connection._on_this_machine("localhost")
    assert connection._on_this_machine(socket.gethostbyname(socket.gethostname()))
    assert not connection._on_this_machine("203.0.113.7")  # TEST-NET-3, never this machine
    assert not connection._on_this_machine("no-such-host.invalid")


@pytest.mark.parametrize(
    ("case", "advice"),
    [
        (
            {"mode": None, "sending": False, "found": False, "local": True},
            "requires Ray's authentication token and none was found here: run ghbot as the "
            "user who started the cluster, or set RAY_AUTH_TOKEN to the cluster's token",
        ),
        (
            {"mode": None, "sending": False, "found": False, "local": False},
            "and none was found here: set RAY_AUTH_TOKEN to the cluster's token (`ray "
            "get-auth-token` prints it, as the user who started the cluster, on its head) "
            "and RAY_AUTH_MODE=token",
        ),
        (
            {"mode": "token", "sending": True, "found": True, "local": False},
            "refused the Ray token found here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token): set RAY_AUTH_TOKEN to the cluster's token",
        ),
        (
            {"mode": "disabled", "sending": False, "found": True, "local": True},
            "requires Ray's authentication token, and RAY_AUTH_MODE=disabled here: "
            "unset RAY_AUTH_MODE",
        ),
        (
            {"mode": None, "sending": False, "found": True, "local": False},
            "ghbot sends the token found here unasked only to a cluster on this machine: "
            "set RAY_AUTH_MODE=token",
        ),
    ],
)
def test_a_refusal_says_what_to_do(case: dict[str, Any], advice: str) -> None:
    text = connection._auth_advice("10.0.0.5:6379", **case)
    assert text.startswith("the Ray cluster at 10.0.0.5:6379 ") and advice in text
    assert "\n" not in text


def test_an_explicit_address_wins_over_ray_address(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:2")
    assert cli.main(["status", "--address", "127.0.0.1:1"]) == 2
    assert "127.0.0.1:1" in capsys.readouterr().err
    assert cli.main(["status"]) == 2
    assert "127.0.0.1:2" in capsys.readouterr().err
    import os

    assert os.environ["RAY_ADDRESS"] == "127.0.0.1:2"  # restored


class FakeAdmin:
    """Stands in for `actors.ray.admin` on a deployment with one dead letter."""

    def __init__(self, namespaces: set[str]) -> None:
        self.namespaces = namespaces
        self.dead = [dict(DEAD)]
        self.replayed: list[tuple[str, str, str | None]] = []
        self.swept: list[float | None] = []
        self.deferred = 0

    def require_shards(self, namespace: str = "ghbot") -> list[Any]:
        from actors.ray.admin import DeploymentNotFound

        if namespace not in self.namespaces:
            raise DeploymentNotFound(f"no ghbot deployment in Ray namespace {namespace!r}")
        return [object(), object()]

    def dead_letters(self, namespace: str = "ghbot") -> list[dict[str, Any]]:
        return [dict(d) for d in self.dead]

    def replay(self, namespace: str, delivery_id: str, handler: str | None = None) -> int:
        self.replayed.append((namespace, delivery_id, handler))
        matched = [
            d
            for d in self.dead
            if d["delivery_id"] == delivery_id and handler in (None, d["handler"])
        ]
        return len(matched)

    def sweep(self, namespace: str = "ghbot", lookback: float | None = None) -> dict[str, Any]:
        self.swept.append(lookback)
        return {
            "listed": 40,
            "failed": 3,
            "held": 1,
            "redelivered": ["guid-a", "guid-b"],
            "gave_up": [],
            "errors": 0,
            "deferred": self.deferred,
        }

    def stats(self, namespace: str = "ghbot") -> list[dict[str, Any]]:
        return [
            {"index": i, "version": "0a1b2c3d-4e5f6a7b", "received": 10 + i, "duplicates": 0}
            | {"active": 1, "busy": 0}
            | {"open_breakers": 0, "activations": 1, "passivations": 0, "snapshots": 0}
            for i in range(2)
        ]


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAdmin:
    """Replace the cluster: `actors.ray.admin`'s functions and the connection."""
    import actors.ray.admin

    fake = FakeAdmin({"ghbot"})
    for name in ("require_shards", "dead_letters", "replay", "stats", "sweep"):
        monkeypatch.setattr(actors.ray.admin, name, getattr(fake, name))

    @contextlib.contextmanager
    def connected(_args: Any) -> Iterator[None]:
        yield

    monkeypatch.setattr(cluster_cli, "connected", connected)
    return fake


def test_list_prints_a_table(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dead-letters", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == [
        "DELIVERY",
        "EVENT",
        "INSTALLATION",
        "HANDLER",
        "ATTEMPTS",
        "ERROR",
        "AT",
    ]
    assert row.startswith(DEAD["delivery_id"]) and "welcome" in row and "1003" in row
    assert "ServerError: GitHub answered 502 Bad Gateway" in row and "…" in row
    assert row.endswith("2023-11-14T22:13:20Z")


def test_list_as_json_and_when_empty(admin: FakeAdmin, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["dead-letters", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [DEAD]
    admin.dead = []
    assert cli.main(["dead-letters", "list"]) == 0
    assert capsys.readouterr().out == "no dead letters\n"
    assert cli.main(["dead-letters", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_replay_exits_0_when_replayed_and_1_when_nothing_matched(
    admin: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    guid = DEAD["delivery_id"]
    assert cli.main(["dead-letters", "replay", guid]) == 0
    assert capsys.readouterr().out == f"replayed 1 handler(s) of delivery {guid}\n"
    assert cli.main(["dead-letters", "replay", guid, "--handler", "other"]) == 1
    assert "no dead letter of delivery" in capsys.readouterr().err
    assert admin.replayed == [("ghbot", guid, None), ("ghbot", guid, "other")]


def test_status_prints_one_row_per_shard(
    admin: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SHARD", "VERSION", "RECEIVED", "DUPLICATES"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["0", "0a1b2c3d-4e5f6a7b", "10"],
        ["1", "0a1b2c3d-4e5f6a7b", "11"],
    ]
    assert cli.main(["status", "--json"]) == 0
    assert [s["index"] for s in json.loads(capsys.readouterr().out)] == [0, 1]


def test_redeliver_sweeps_now_and_says_what_it_asked_for(
    admin: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["redeliver"]) == 0
    summary, *lines = capsys.readouterr().out.splitlines()
    assert summary == (
        "40 delivery attempts listed, 3 deliveries failed, 1 of them journaled anyway; "
        "asked GitHub to redeliver 2, gave up on 0"
    )
    assert lines == ["redelivered guid-a", "redelivered guid-b"]
    assert cli.main(["redeliver", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["redelivered"] == ["guid-a", "guid-b"]
    assert cli.main(["redeliver", "--since", "2d"]) == 0
    assert admin.swept == [None, None, 2 * 86400.0]  # None: the actor's own 6 hours
    capsys.readouterr()
    admin.deferred = 5  # an ask answered with a rate limit stopped the sweep
    assert cli.main(["redeliver"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "5 not asked for yet: an ask met a rate limit (GitHub's, or the app's own count), "
        "a 5xx or no answer; later sweeps ask for them (scheduled ones, or this command "
        "again)"
    )


@pytest.mark.parametrize("since", ["soon", "30s", "8d"])
def test_redeliver_since_takes_a_duration_from_a_minute_to_seven_days(
    admin: FakeAdmin, since: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["redeliver", "--since", since])
    assert exited.value.code == 2 and admin.swept == []
    assert "--since" in capsys.readouterr().err


def test_a_namespace_without_a_deployment_is_exit_2(
    admin: FakeAdmin, capsys: pytest.CaptureFixture[str]
) -> None:
    commands = [["status"], ["dead-letters", "list"], ["dead-letters", "replay", "g"]]
    for argv in [*commands, ["redeliver"]]:
        assert cli.main([*argv, "--namespace", "nobody"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("ghbot: error: no ghbot deployment in Ray namespace 'nobody'")
        assert err.count("\n") == 1
    assert admin.replayed == []


def test_stop_deletes_the_serve_application_running_ghbots_ingress() -> None:
    from actors.ray.admin import ingress_app

    served = {"default": ["WebhookIngress"], "other": ["Model"]}
    assert ingress_app(None, served) == "default"  # `serve run`'s name
    assert ingress_app(None, {"ghbot": ["WebhookIngress"]}) == "ghbot"  # deploy/serve.yaml's
    assert ingress_app("default", served) == "default"  # asked for by name: that one
    assert ingress_app(None, {"other": ["Model"]}) is None  # deleted already: actors only
    assert ingress_app("gone", {"other": ["Model"]}) is None
    with pytest.raises(UsageError, match="no Serve application 'gone'; ghbot's ingress runs as"):
        ingress_app("gone", served)  # a wrong name would leave the ingress running
    # Someone else's application, asked for by name, is not ghbot's to delete: refused,
    # whether ghbot's ingress runs beside it or not.
    with pytest.raises(
        UsageError,
        match=r"^the Serve application 'other' does not run ghbot's ingress \(WebhookIngress\); "
        r"ghbot's ingress runs as 'default': nothing stopped$",
    ):
        ingress_app("other", served)
    with pytest.raises(
        UsageError, match=r"'other' does not run ghbot's ingress \(WebhookIngress\): "
    ):
        ingress_app("other", {"other": ["Model"]})
    two = {"a": ["WebhookIngress"], "b": ["WebhookIngress"]}
    with pytest.raises(UsageError, match=r"runs in 2 Serve applications \('a', 'b'\)"):
        ingress_app(None, two)


def test_stop_refuses_an_app_that_is_not_ghbots_in_one_line_stopping_nothing(
    admin: FakeAdmin, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ghbot stop --app NAME` over a stand-in of Serve's status (no Ray runs here; the
    cluster test, tests/cluster/test_stop.py, runs `ghbot stop` on a deployment)."""
    from types import SimpleNamespace

    import ray
    from ray import serve

    import actors.ray.admin
    from actors.ray.ingress import WebhookDeployment

    # What `stop` looks for is the name Serve gives ghbot's ingress deployment.
    assert WebhookDeployment.name == actors.ray.admin.INGRESS_DEPLOYMENT
    apps = {"ghbot": ["WebhookIngress"], "model": ["Model", "Preprocess"]}
    status = SimpleNamespace(
        applications={
            name: SimpleNamespace(deployments=dict.fromkeys(names)) for name, names in apps.items()
        }
    )
    deleted: list[str] = []
    touched: list[str] = []
    monkeypatch.setattr(serve, "status", lambda: status)
    monkeypatch.setattr(serve, "delete", deleted.append)

    def shards(namespace: str) -> dict[str, Any]:
        touched.append(namespace)
        return {}

    def no_actor(name: str, namespace: str) -> Any:
        raise ValueError(name)

    monkeypatch.setattr(actors.ray.admin, "shards_by_name", shards)
    monkeypatch.setattr(actors.ray.admin, "retire", lambda *a, **k: 0)
    monkeypatch.setattr(ray, "get_actor", no_actor)

    assert cli.main(["stop", "--app", "model"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "ghbot: error: the Serve application 'model' does not run ghbot's ingress "
        "(WebhookIngress); ghbot's ingress runs as 'ghbot': nothing stopped\n"
    )
    assert deleted == [] and touched == []
    # ghbot's own, by name: deleted, then the actors stopped.
    assert cli.main(["stop", "--app", "ghbot"]) == 0
    assert capsys.readouterr().out.startswith("deleted the Serve application 'ghbot'")
    assert deleted == ["ghbot"] and touched == ["ghbot"]


def test_a_sweep_asked_for_by_hand_is_waited_for_as_long_as_its_asks_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sweep after an outage waits for the scheduled one and asks GitHub a paced
    write at a time: `ghbot redeliver` waited 60 s, as for a shard's answer, and said
    the deployment did not answer while the sweep went on."""
    import ray

    from actors.ray import admin

    class Sweep:
        def remote(self, lookback: float | None) -> str:
            return "ref"

    class AppAuth:
        sweep = Sweep()

    waited: list[float] = []

    def get(ref: str, timeout: float) -> dict[str, Any]:
        waited.append(timeout)
        return {"listed": 0}

    monkeypatch.setattr(ray, "get_actor", lambda name, namespace: AppAuth())
    monkeypatch.setattr(ray, "get", get)
    assert admin.sweep("ghbot") == {"listed": 0}
    assert waited == [admin.SWEEP_TIMEOUT] and admin.SWEEP_TIMEOUT >= 600


def test_a_replay_goes_to_the_shard_its_dead_letter_names_past_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Shard 1 missing, shards 0 and 2 running: shard 2's dead letter is replayed by
    shard 2 (its list position, 1, named no shard, or the wrong one)."""
    from types import SimpleNamespace

    import ray

    from actors.ray import admin

    asked: list[str] = []

    class Shard:
        def __init__(self, name: str) -> None:
            self.name = name
            self.replay = SimpleNamespace(remote=self.remote)

        def remote(self, installation: int, delivery: str, handler: str | None) -> int:
            asked.append(self.name)
            return 1

    running = {"ghbot-shard-0": Shard("0"), "ghbot-shard-2": Shard("2")}
    dead = [{"shard": 2, "installation_id": 7, "delivery_id": "d"}]
    monkeypatch.setattr(admin, "shards_by_name", lambda namespace: running)
    monkeypatch.setattr(admin, "dead_letters", lambda namespace: dead)
    monkeypatch.setattr(ray, "get", lambda refs, timeout: refs)
    assert admin.replay("ghbot", "d") == 1 and asked == ["2"]
