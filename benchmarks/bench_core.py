"""Micro-benchmarks of the sans-I/O core, each against its floor measured in the same run.

- JWT signing: `AppAuth.jwt` forced to sign anew every call, against a raw RS256
  signature of the same claims with `cryptography` (the floor: the RSA operation).
- Signature check: `ghbot.webhooks.verify` against raw `hmac.new(...).hexdigest()` and
  `hmac.compare_digest` over the same 13 KB payload.
- Delivery parsing: `parse_delivery` (headers, signature, envelope) against raw hmac
  plus `json.loads` of the body (what a hand-rolled bot does).
- Event decoding: `ghbot.events.parse` against `json.loads` (more in bench_events.py).

Ratios are floor time / ghbot time: 1.0 means as fast as the floor, above 1.0 faster.

    python benchmarks/bench_core.py [--quick]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import platform
import timeit
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ghbot.auth import AppAuth
from ghbot.events import parse
from ghbot.testing.payloads import EXAMPLES
from ghbot.webhooks import parse_delivery, sign, verify

FIXTURES = EXAMPLES
SECRET = "benchmark-secret"


def best_us(func: Callable[[], object], number: int, repeat: int) -> float:
    """Return the best of `repeat` runs of `number` calls, in µs per call."""
    return min(timeit.repeat(func, number=number, repeat=repeat)) / number * 1e6


def jwt_rows(number: int, repeat: int) -> tuple[float, float]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    auth = AppAuth(12345, pem)
    clock = [1_700_000_000.0]

    def ours() -> str:
        clock[0] += 600  # past the reuse window: sign anew every call
        return auth.jwt(now=clock[0])

    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
    claims = base64.urlsafe_b64encode(b'{"iat":1,"exp":601,"iss":"12345"}').rstrip(b"=")
    message = header + b"." + claims

    def floor() -> bytes:
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    return best_us(floor, number, repeat), best_us(ours, number, repeat)


def signature_rows(body: bytes, number: int, repeat: int) -> tuple[float, float]:
    signature = sign(body, SECRET)
    digest = signature[7:]
    key = SECRET.encode()

    def floor() -> bool:
        return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), digest)

    return best_us(floor, number, repeat), best_us(
        lambda: verify(body, signature, [SECRET]), number, repeat
    )


def delivery_rows(body: bytes, number: int, repeat: int) -> tuple[float, float]:
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Hook-ID": "1",
        "X-Hub-Signature-256": sign(body, SECRET),
        "User-Agent": "GitHub-Hookshot/044aadd",
    }
    key = SECRET.encode()
    digest = headers["X-Hub-Signature-256"][7:]

    def floor() -> object:
        hmac.compare_digest(hmac.new(key, body, hashlib.sha256).hexdigest(), digest)
        return json.loads(body)

    return best_us(floor, number, repeat), best_us(
        lambda: parse_delivery(headers, body, [SECRET]), number, repeat
    )


def decode_rows(body: bytes, number: int, repeat: int) -> tuple[float, float]:
    parse("issues", body)
    return best_us(lambda: json.loads(body), number, repeat), best_us(
        lambda: parse("issues", body), number, repeat
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    number, repeat = (200, 3) if args.quick else (2000, 7)
    body = (FIXTURES / "issues.opened.json").read_bytes()
    rows = [
        ("JWT signing (RS256)", "raw RSA sign", *jwt_rows(max(number // 10, 20), repeat)),
        ("signature check", "raw hmac", *signature_rows(body, number, repeat)),
        ("delivery parse", "hmac + json.loads", *delivery_rows(body, number, repeat)),
        ("event decode", "json.loads", *decode_rows(body, number, repeat)),
    ]
    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"# payload issues.opened, {len(body)} bytes; µs per call, best of {repeat}")
    print(f"{'operation':<22}{'floor':<20}{'floor µs':>10}{'ghbot µs':>10}{'ratio':>8}")
    for name, floor_name, floor_us, ours_us in rows:
        ratio = floor_us / ours_us
        print(f"{name:<22}{floor_name:<20}{floor_us:>10.1f}{ours_us:>10.1f}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
