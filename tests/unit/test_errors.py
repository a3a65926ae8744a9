"""The error hierarchy: who is at fault, what the ingress answers, and pickling."""

from __future__ import annotations

import pickle

import pytest

from ghbot import errors


def _examples() -> list[errors.GhBotError]:
    return [
        errors.ConfigError(["a", "b"]),
        errors.UnknownEventError("issues.opend"),
        errors.NoInstallation("guid", "issues", "quota"),
        errors.InvalidSignature("bad", delivery_id="d"),
        errors.PayloadTooLarge("big"),
        errors.NotFound(404, "Not Found", method="GET", url="https://x/y", request_id="r"),
        errors.ValidationFailed(422, "Validation Failed", errors=[{"field": "title"}]),
        errors.RateLimited(403, "secondary", kind="secondary", retry_after=60, reset=1.0),
        errors.InstallationUnavailable(
            403, "installation 7 is suspended", installation_id=7, suspended=True, url="/x"
        ),
        errors.ServerError(502, "Bad Gateway"),
        errors.GraphQLError([{"message": "nope"}]),
        errors.Timeout("slow", method="GET", url="u"),
        errors.CircuitOpen("open", retry_after=3),
        errors.ShardDraining(7, "delivery d was not replayed"),
        errors.LeaseExhausted("quota lease is used up: all 3 requests made"),
        errors.Conflict("s", 1, 2),
        errors.Fenced(1, 2, 3),
        errors.JournalUnavailable("down"),
    ]


@pytest.mark.parametrize("error", _examples(), ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_data(error: errors.GhBotError) -> None:
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_who_is_at_fault() -> None:
    assert issubclass(errors.ConfigError, errors.UsageError)
    assert issubclass(errors.NoInstallation, errors.UsageError)
    assert issubclass(errors.InvalidSignature, errors.WebhookError)
    assert issubclass(errors.RateLimited, errors.ClientError)
    assert not issubclass(errors.ServerError, errors.ClientError)
    assert errors.UnsupportedContentType("x").http_status == 415
    assert errors.MalformedPayload("x").http_status == 400


def test_config_error_lists_every_problem() -> None:
    error = errors.ConfigError(["one", "two"])
    assert error.problems == ("one", "two")
    assert "2 configuration problems" in str(error)


def test_no_installation_says_what_happened() -> None:
    error = errors.NoInstallation("guid-1", "issues")
    assert str(error) == (
        "delivery guid-1 (event issues) carries no installation: it came from a repository "
        "or organization webhook pointed at the App's URL, or is an app-level event; "
        "self.github is unavailable"
    )
    assert str(errors.NoInstallation(attribute="quota")).startswith("this delivery carries")


def test_a_rate_limit_pickled_before_reset_after_existed_reads_it_as_unknown() -> None:
    """An older process (an upgrade's) pickles a `RateLimited` without `reset_after`;
    the newer one that reads it finds None, not an `AttributeError` in its handler's
    retry."""
    error = errors.RateLimited(429, "spent", kind="primary", retry_after=1.0, reset_after=5.0)
    rebuild, (cls, args, state) = error.__reduce__()  # what unpickling calls
    assert rebuild(cls, args, state).reset_after == 5.0
    older = rebuild(cls, args, {k: v for k, v in state.items() if k != "reset_after"})
    assert isinstance(older, errors.RateLimited) and older.reset_after is None
