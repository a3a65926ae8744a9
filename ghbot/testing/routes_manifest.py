"""The fake's App manifest flow: the page that creates an App, and the code's conversion.

A browser posts a form with a `manifest` field (JSON) to `/settings/apps/new` (or
`/organizations/{org}/settings/apps/new`); GitHub creates the App and redirects to the
manifest's `redirect_url` with `code` and the query's `state`. The App's owner then
exchanges the code, once (GitHub allows an hour; the fake's codes do not expire), at
`POST /app-manifests/{code}/conversions` (no authentication) for the App's ID, slug,
client ID and secret, webhook secret and private key. The fake becomes that App: its
JWTs are checked against the new key alone (a JWT signed with an earlier key is
refused, even one the fake had accepted before).

https://docs.github.com/en/apps/sharing-github-apps/registering-a-github-app-from-a-manifest
https://docs.github.com/en/rest/apps/apps#create-a-github-app-from-a-manifest
"""

from __future__ import annotations

import functools
import json
import re
import secrets
from typing import Any
from urllib.parse import urlencode

from ghbot.testing.identity import Identities
from ghbot.testing.keys import app_key_pair
from ghbot.testing.router import Ctx, Reply, Router, error
from ghbot.testing.state import Store, iso

__all__ = ["ManifestRoutes"]


class ManifestRoutes:
    """The manifest form and the conversion; `manifests` holds every manifest received."""

    def __init__(self, store: Store, identities: Identities, app_id: int) -> None:
        self.store = store
        self.identities = identities
        self.app_id = app_id
        self.manifests: list[dict[str, Any]] = []
        self._codes: dict[str, tuple[dict[str, Any], str | None]] = {}

    def register(self, router: Router) -> None:
        add = functools.partial(router.add, auth="any", counted=False, query={})
        add("POST", "/settings/apps/new", self.new_app, query={"state": None})
        org_form = "/organizations/{org}/settings/apps/new"
        add("POST", org_form, self.new_app, query={"state": None})
        add("POST", "/app-manifests/{code}/conversions", self.conversion)

    def new_app(self, ctx: Ctx) -> Reply:
        raw = ctx.body().get("manifest")
        try:
            manifest = json.loads(raw) if isinstance(raw, str) else None
        except ValueError:
            manifest = None
        if not isinstance(manifest, dict):
            return error(422, "Invalid manifest: the form's manifest field is not a JSON object")
        hook = manifest.get("hook_attributes")
        missing = [
            name
            for name, present in (
                ("url", isinstance(manifest.get("url"), str)),
                ("redirect_url", isinstance(manifest.get("redirect_url"), str)),
                ("hook_attributes.url", isinstance(hook, dict) and "url" in hook),
            )
            if not present
        ]
        if missing:
            return error(422, f"Invalid manifest: missing {', '.join(missing)}")
        self.manifests.append(manifest)
        code = secrets.token_hex(10)
        self._codes[code] = (manifest, ctx.params.get("org"))
        query = {"code": code, **({"state": ctx.query["state"]} if "state" in ctx.query else {})}
        return Reply(None, 302, {"Location": f"{manifest['redirect_url']}?{urlencode(query)}"})

    def conversion(self, ctx: Ctx) -> Reply:
        found = self._codes.pop(ctx.params["code"], None)
        if found is None:
            return error(404, "Not Found")
        manifest, org = found
        private, public = app_key_pair()
        self.identities.public_key = public
        self.identities.more_keys.clear()
        self.identities.forget_jwts()
        name = str(manifest.get("name") or "ghbot-app")
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "app"
        self.store.app_slug = slug
        now = iso(self.store.clock())
        owner = org or "octocat"
        return Reply(
            {
                "id": self.app_id,
                "slug": slug,
                "node_id": f"A_{self.app_id}",
                "owner": {"login": owner, "id": 1, "type": "Organization" if org else "User"},
                "name": name,
                "description": manifest.get("description"),
                "external_url": manifest.get("url"),
                "html_url": f"https://github.com/apps/{slug}",
                "created_at": now,
                "updated_at": now,
                "permissions": manifest.get("default_permissions") or {},
                "events": manifest.get("default_events") or [],
                "client_id": f"Iv1.{secrets.token_hex(8)}",
                "client_secret": secrets.token_hex(20),
                "webhook_secret": secrets.token_hex(20),
                "pem": private.decode(),
            },
            201,
        )
