"""The Ray runtime of ghbot: ingress, shards of installation actors, app auth.

What a bot author needs is importable without starting Ray::

    from actors import InstallationActor, on

Everything that calls Ray lives in `actors.runtime`, `actors.ingress` and
`actors.deploy`, imported only when a deployment is built.
"""

from actors.bot import InstallationActor, on

__all__ = ["InstallationActor", "on"]
