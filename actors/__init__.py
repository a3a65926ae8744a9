"""The actor framework of ghbot: installation actors, their shards, and their edges.

What a bot author needs is importable without starting Ray::

    from actors import InstallationActor, every, on

Everything that calls Ray lives in `actors.ray` (the Serve ingress, the shard and
app-auth actors, the deployment, the cluster commands), imported only when a
deployment is built or a cluster command runs. The rest runs a bot in one process as
well: the test harness (`actors.testing`), `ghbot dev` (`actors.dev`).
"""

from actors.bot import InstallationActor, on
from actors.schedule import every

__all__ = ["InstallationActor", "every", "on"]
