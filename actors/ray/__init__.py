"""The Ray edge of the actor framework: the only code of ghbot that imports Ray.

- `ingress`: the Ray Serve deployment that verifies GitHub's webhooks and hands them,
  in batches, to the shard that owns their installation (`actors.wire`).
- `runtime`: the shard actors (each wraps an `actors.shard.ShardCore`) and the
  app-auth actor that holds the private key.
- `deploy`: what `serve run ghbot.deploy` builds, from the environment and arguments.
- `admin`: stats, dead letters and sweeps of a running deployment, for the CLI.
- `cli`: the CLI's cluster commands (`ghbot status`, `dead-letters`, `redeliver`, `stop`),
  which plug into `ghbot`'s command line.
- `metrics`: ghbot's OpenTelemetry metrics forwarded to Ray's metrics export.

Importing this package imports no Ray; its modules do.
"""
