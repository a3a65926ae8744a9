"""The Ray edge of the actor framework: the only code of ghbot that imports Ray.

- `ingress`: the Ray Serve deployment that verifies GitHub's webhooks and hands them,
  in batches, to the shard that owns their installation (`actors.wire`).
- `batcher`: the ingress's per-shard batcher, which holds a batch for a few seconds
  while its shard is draining or not reached; `channel`: the TCP channel a batch goes
  to its shard on.
- `shard_actor`: the shard actor, which wraps an `actors.shard.ShardCore`.
- `app_auth_actor`: the app-auth actor, which holds the private key.
- `lifecycle`: starting those actors, replacing them when the deployment's version
  changes, stopping them; `names`: their Ray names, and finding them by name.
- `lease_sources`: where a quota lease's task asks for its write's turn and its token.
- `process`: the set-up of each ghbot Ray process (logging, metrics, traces, collector).
- `deploy`: what `serve run ghbot.deploy` builds, from the environment and arguments.
- `admin`: stats, dead letters and sweeps of a running deployment, for the CLI.
- `cli`: the CLI's cluster commands (`ghbot status`, `dead-letters`, `redeliver`, `stop`),
  which plug into `ghbot`'s command line; `connection`: how they reach a Ray cluster,
  importing no Ray at load.
- `metrics`: ghbot's OpenTelemetry metrics forwarded to Ray's metrics export.
- `sigterm`: a shard's drain on SIGTERM, before Ray's own exit.

Importing this package imports no Ray; its modules do.
"""
