"""`cluster.yaml` is a config `ray up` accepts: parsed and validated as Ray does it.

`ray up` loads the YAML, merges the provider's defaults (`prepare_config`), lets the
provider fill in node resources, and validates the result against Ray's JSON schema
(`validate_config`) before it touches a machine. These tests run the same steps
offline; Ray is imported, never started.
"""

from __future__ import annotations

import copy
import re
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
    provider_cls = _NODE_PROVIDERS[prepared["provider"]["type"]](prepared["provider"])
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
    assert any("pip install" in c and "~/ghbot" in c for c in prepared["setup_commands"])
    head = " ".join(prepared["head_start_ray_commands"])
    assert "ray start --head --port=6379" in head and "--dashboard-host=0.0.0.0" in head
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker
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
