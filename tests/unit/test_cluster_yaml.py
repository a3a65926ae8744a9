"""`cluster.yaml` is a config `ray up` accepts: parsed and validated as Ray does it.

`ray up` loads the YAML, merges the provider's defaults (`prepare_config`), lets the
provider fill in node resources, and validates the result against Ray's JSON schema
(`validate_config`) before it touches a machine. These tests run the same steps
offline; Ray is imported, never started.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"


def _load() -> dict[str, Any]:
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(config, dict)
    return config


def _as_ray_up_does(config: dict[str, Any]) -> dict[str, Any]:
    """Prepare and validate `config` like `ray up` (commands._bootstrap_config), offline."""
    from ray.autoscaler._private.providers import _NODE_PROVIDERS
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    provider = _NODE_PROVIDERS[prepared["provider"]["type"]]
    provider_cls = provider(prepared["provider"])  # type: ignore[no-untyped-call]
    prepared = provider_cls.fillout_available_node_types_resources(prepared)
    validate_config(prepared)
    return dict(provider_cls.bootstrap_config(prepared))


def test_cluster_yaml_passes_rays_validation() -> None:
    config = _load()
    prepared = _as_ray_up_does(config)
    assert prepared["cluster_name"] == "ghbot"
    assert prepared["provider"]["type"] == "local"
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(config["provider"]["worker_ips"])
    assert any("pip install" in c and "~/ghbot-src" in c for c in prepared["setup_commands"])
    head = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head --port=${GHBOT_RAY_PORT:-6379}" in head
    assert "--dashboard-host=0.0.0.0" in head
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:${GHBOT_RAY_PORT:-6379}" in worker
    # Every node states token authentication: a joining node does not infer it.
    assert "export RAY_AUTH_MODE=token" in head and "export RAY_AUTH_MODE=token" in worker
    assert "~/.ray/auth_token" in prepared["file_mounts"]


def test_validation_is_not_vacuous() -> None:
    config = _load()
    config["head_start_ray_command"] = ["a misspelled key"]
    with pytest.raises(jsonschema.ValidationError):
        _as_ray_up_does(config)


def test_the_pinned_ray_is_the_ray_that_runs_ray_up() -> None:
    import ray

    pins = re.findall(r'"ray\[serve\]==([^"]+)"', CLUSTER_YAML.read_text())
    assert pins == [ray.__version__], "pin cluster.yaml's Ray to the version installed here"


def test_the_aws_example_in_the_comments_is_valid_too() -> None:
    """The commented AWS block, swapped in for the local provider, passes the schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    text = CLUSTER_YAML.read_text()
    start = text.index("# --- Switching to a cloud provider")
    lines: list[str] = []
    for line in text[start:].splitlines():
        if line.startswith("#   "):
            lines.append(line[len("#") :])
        elif lines:
            break
    example = yaml.safe_load("\n".join(lines))
    assert example["provider"]["type"] == "aws"
    config = {k: v for k, v in _load().items() if k not in ("provider", "auth")}
    config.update(example)
    # AWS fills node resources in through its API; state them to stay offline.
    for node_type in config["available_node_types"].values():
        node_type["resources"] = {"CPU": 4}
    validate_config(prepare_config(config))


def test_serve_settings_are_set_before_ray_starts() -> None:
    """Serve reads RAY_SERVE_* when its processes start: they must be in `ray start`'s
    environment on every node (as `ghbot serve-env` prints them for the node), with the
    node's settings file loaded after them, so that it may override them."""
    prepared = _as_ray_up_does(_load())
    for commands in (prepared["head_start_ray_commands"], prepared["worker_start_ray_commands"]):
        start = commands[-1]
        exports = start.index('eval "$(ghbot serve-env)"')
        assert exports < start.index(". ~/ghbot.env") < start.index("ray start")


def test_the_comment_names_what_serve_env_sets() -> None:
    """The comment above `ray start` names each variable `ghbot serve-env` sets."""
    from actors.ray.deploy import serve_environment

    text = CLUSTER_YAML.read_text()
    for name in serve_environment(2):
        assert name in text, name


def test_the_shipped_serve_config_is_valid() -> None:
    """deploy/serve.yaml, as setup_commands write it to ~/serve.yaml, passes Serve's schema."""
    from ray.serve.schema import ServeDeploySchema

    text = (ROOT / "deploy" / "serve.yaml").read_text()
    assert "@RELEASE@" in text
    config = ServeDeploySchema.parse_obj(yaml.safe_load(text.replace("@RELEASE@", "abc123")))
    (app,) = config.applications
    assert app.import_path == "ghbot.deploy" and app.route_prefix == "/"
    assert app.runtime_env["env_vars"]["GHBOT_RELEASE"] == "abc123"
    assert config.http_options.host == "0.0.0.0"  # noqa: S104 - every node, behind a LB
    assert config.http_options.port == 8000
    setup = " ".join(_load()["setup_commands"])
    assert "~/ghbot-src/deploy/serve.yaml > ~/serve.yaml" in setup


def _cluster_config() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cluster_config", ROOT / "scripts" / "cluster_config.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _inputs(tmp_path: Path, env_mode: int = 0o600) -> list[str]:
    key = tmp_path / "id_ed25519"
    key.write_text("a key")
    bot = tmp_path / "my-bot"
    bot.mkdir()
    (bot / "pyproject.toml").write_text("[project]\nname = 'my-bot'\n")
    env = tmp_path / "cluster.env"
    env.write_text((ROOT / "deploy" / "cluster.env.example").read_text())
    env.chmod(env_mode)
    token = tmp_path / "token"
    token.write_text("t" * 64)
    pem = tmp_path / "app.pem"
    pem.write_text("a pem")
    return [
        *("--head-ip", "10.1.0.1", "--worker-ip", "10.1.0.2", "--worker-ip", "10.1.0.3"),
        *("--ssh-user", "ops", "--ssh-key", str(key), "--bot-dir", str(bot)),
        *("--env-file", str(env), "--auth-token", str(token)),
        *("--mount", f"~/github-app.pem={pem}"),
    ]


def test_cluster_config_writes_a_config_ray_up_accepts(tmp_path: Path) -> None:
    out = tmp_path / "my-cluster.yaml"
    assert _cluster_config().main([*_inputs(tmp_path), "-o", str(out)]) == 0
    config = yaml.safe_load(out.read_text())
    prepared = _as_ray_up_does(config)
    assert prepared["provider"]["head_ip"] == "10.1.0.1"
    assert prepared["provider"]["worker_ips"] == ["10.1.0.2", "10.1.0.3"]
    assert prepared["auth"] == {"ssh_user": "ops", "ssh_private_key": str(tmp_path / "id_ed25519")}
    assert prepared["file_mounts"] == {
        "~/ghbot-src": str(ROOT),
        "~/bot-src": str(tmp_path / "my-bot"),
        "~/ghbot.env": str(tmp_path / "cluster.env"),
        "~/.ray/auth_token": str(tmp_path / "token"),
        "~/github-app.pem": str(tmp_path / "app.pem"),
    }
    # Everything else is cluster.yaml's.
    assert prepared["setup_commands"] == _load()["setup_commands"]
    assert prepared["head_start_ray_commands"] == _load()["head_start_ray_commands"]


def test_a_mount_written_as_the_readme_does_lands_in_the_nodes_home(tmp_path: Path) -> None:
    """The README's `--mount ~/github-app.pem=...`, through a shell, quoted as written
    there and unquoted (the shell expands `~` to this machine's home): both mount the
    key at the SSH user's `~/github-app.pem` on the nodes."""
    pem = tmp_path / "app.pem"
    inputs = _inputs(tmp_path)[:-2]  # less _inputs' own --mount
    readme = (ROOT / "README.md").read_text()
    assert "--mount '~/github-app.pem=~/keys/my-app.pem'" in readme
    script = ROOT / "scripts" / "cluster_config.py"
    for written in (f"'~/github-app.pem={pem}'", f"~/github-app.pem={pem}"):
        out = tmp_path / "my-cluster.yaml"
        command = " ".join([sys.executable, str(script), *map(shlex.quote, inputs)])
        done = subprocess.run(
            ["bash", "-c", f"{command} --mount {written} -o {out}"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        mounts = yaml.safe_load(out.read_text())["file_mounts"]
        assert mounts["~/github-app.pem"] == str(pem), written
        assert not [m for m in mounts if m.startswith(str(Path.home()))], mounts


def test_cluster_config_lists_every_problem_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _inputs(tmp_path, env_mode=0o644)
    (tmp_path / "id_ed25519").unlink()
    (tmp_path / "my-bot" / "pyproject.toml").unlink()
    env = tmp_path / "cluster.env"
    env.write_text(env.read_text().replace("postgresql://", "sqlite:///"))
    out = tmp_path / "my-cluster.yaml"
    assert _cluster_config().main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert not out.exists()
    assert "--ssh-key" in err and "no such file" in err
    assert "no pyproject.toml" in err
    assert "mode 0644" in err and "chmod 600" in err
    assert "GHBOT_JOURNAL_URL must be postgresql" in err


def test_the_settings_example_sets_what_a_cluster_needs() -> None:
    settings = _cluster_config().read_env_file(ROOT / "deploy" / "cluster.env.example")
    for name in ("GITHUB_APP_ID", *_cluster_config().REQUIRED):
        assert settings.get(name), name
    assert settings["GHBOT_JOURNAL_URL"].startswith("postgresql://")
    # Two ingress replicas, as README asks for in production (docs/scaling.md).
    assert int(settings["GHBOT_INGRESS_REPLICAS"]) >= 2
