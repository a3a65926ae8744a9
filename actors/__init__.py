"""The Ray runtime of ghbot: ingress, shards of installation actors, app auth.

What a bot author needs is importable without starting Ray::

    from actors import InstallationActor, every, on

Everything that calls Ray lives in `actors.runtime`, `actors.ingress` and
`actors.deploy`, imported only when a deployment is built.
"""

from actors.bot import InstallationActor, on
from actors.schedule import every

__all__ = ["InstallationActor", "every", "on"]
