"""Connect the CLI's cluster commands to a Ray cluster, or say in one line why not.

`connected` finds the cluster (`--address`, else RAY_ADDRESS, else the one on this
machine), checks within `PROBE_TIMEOUT` seconds that it answers, and sends Ray's
authentication token to a cluster on this machine without being told (`serve run`
starts one with token authentication on); a cluster that refuses this process, or a
Ray failure while connected, is a `ClusterError` saying what to do. Ray is imported
only inside these functions, so loading them costs no Ray import.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Iterator

from ghbot.digits import whole_number
from ghbot.errors import GhBotError

__all__ = ["AUTH_MODE", "PROBE_TIMEOUT", "ClusterError", "connected"]

PROBE_TIMEOUT = 3.0
"""Seconds to wait for the cluster's GCS port to accept a connection before giving up."""

AUTH_MODE = "RAY_AUTH_MODE"
"""Ray's switch for token authentication: `token`, `disabled`, or unset."""

_PRINTED_BY = "`ray get-auth-token` prints it, as the user who started the cluster, on its head"


class ClusterError(GhBotError):
    """No Ray cluster answers at the address (none found for `auto`), or its actors failed."""


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
    if not host or (number := whole_number(port)) is None or number > 65535:
        raise ClusterError(f"--address {address!r}: expected HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), PROBE_TIMEOUT).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        shown = address if resolved == address else f"{address} ({resolved})"
        raise ClusterError(f"no Ray cluster answers at {shown}: {reason}") from None
    return resolved


@contextlib.contextmanager
def connected(args: argparse.Namespace) -> Iterator[None]:
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
