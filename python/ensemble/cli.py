"""The `ensemble` command line (see docs/cli.md): serve, reload, migrate, config check, keys, version.

The server (Granian, the app) and Redis are imported inside the subcommands that use them, so that
`ensemble keys create` or `config check` do not pay for loading them (not to hide import cycles:
`python -m ensemble.tools.deps` counts these imports too)."""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec
import orjson

from ensemble import __version__
from ensemble.config import Config, format_duration
from ensemble.config_loader import load_config
from ensemble.errors import ConfigError
from ensemble.providers import registry
from ensemble.ready_notice import ReadyNotice, key_create_command, local_url, wait_until_accepted
from ensemble.storage import database, keys

DEFAULT_CONFIG = "config/ensemble.yaml"
EXIT_CONFIG = 1
EXIT_ENVIRONMENT = 2


def _err(message: str) -> None:
    print(f"ensemble: {message}", file=sys.stderr)


def _load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as e:
        _err(f"configuration has {len(e.problems)} problem(s):")
        for p in e.problems:
            print(f"  {p}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def environment() -> str:
    env = os.environ.get("ENSEMBLE_ENVIRONMENT", "development") or "development"
    if env not in ("development", "staging", "production"):
        _err(f"ENSEMBLE_ENVIRONMENT must be development, staging or production (got {env!r})")
        raise SystemExit(EXIT_ENVIRONMENT)
    return env


def _valid_encryption_key(value: str) -> bool:
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def prepare_environment(config: Config) -> None:
    """Production refuses to start without its secrets; development makes what it needs (see docs/cli.md)."""
    env = environment()
    enc = os.environ.get("ENSEMBLE_ENCRYPTION_KEY", "")
    if env == "production":
        missing = [v for v in ("ENSEMBLE_ENCRYPTION_KEY", "ENSEMBLE_ADMIN_KEY") if not os.environ.get(v)]
        if missing:
            _err(
                f"refusing to start in production without {' and '.join(missing)} "
                "(ENSEMBLE_ENCRYPTION_KEY: base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
            )
            raise SystemExit(EXIT_ENVIRONMENT)
    previous = [v for v in os.environ.get("ENSEMBLE_ENCRYPTION_KEY_PREVIOUS", "").split(",") if v.strip()]
    if not all(_valid_encryption_key(v.strip()) for v in previous):
        _err("ENSEMBLE_ENCRYPTION_KEY_PREVIOUS must be comma-separated base64 encodings of 32 bytes each")
        raise SystemExit(EXIT_ENVIRONMENT)
    if enc:
        if not _valid_encryption_key(enc):
            _err("ENSEMBLE_ENCRYPTION_KEY must be the base64 encoding of exactly 32 bytes")
            raise SystemExit(EXIT_ENVIRONMENT)
        return
    if env == "development":
        data_dir = Path(config.database.path).parent
        key_file = data_dir / "encryption.key"
        if key_file.exists():
            value = key_file.read_text().strip()
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            value = base64.b64encode(os.urandom(32)).decode()
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value + "\n")
            print(
                f"WARNING: ENSEMBLE_ENCRYPTION_KEY is not set; generated one into {key_file} (mode 0600). "
                "Set it explicitly outside development.",
                file=sys.stderr,
            )
        if not _valid_encryption_key(value):
            _err(f"{key_file} does not hold a base64-encoded 32-byte key; delete it to generate a new one")
            raise SystemExit(EXIT_ENVIRONMENT)
        os.environ["ENSEMBLE_ENCRYPTION_KEY"] = value
    else:
        _err(f"ENSEMBLE_ENCRYPTION_KEY is required in {env}")
        raise SystemExit(EXIT_ENVIRONMENT)


def _migrate(config: Config) -> tuple[int, int]:
    conn = database.connect_sync(config.database.path)
    try:
        return database.migrate(conn)
    finally:
        conn.close()


STREAMS_PER_WORKER = 50_000


def cmd_serve(args: argparse.Namespace) -> int:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings

    from ensemble import logs
    from ensemble.server import pidfile, reload
    from ensemble.server.app import CONFIG_ENV, OVERRIDES_ENV, served_config

    config = _load(args.config)
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.workers is not None:
        if args.workers < 1:
            _err("--workers must be at least 1")
            return EXIT_CONFIG
        overrides["workers"] = args.workers
    for key, value in overrides.items():
        setattr(config.server, key, value)
    prepare_environment(config)
    before, after = _migrate(config)
    if before != after:
        print(f"database {config.database.path}: schema migrated {before} -> {after}", file=sys.stderr)
    notice = (
        ReadyNotice(config, key_create_command(args.config, DEFAULT_CONFIG))
        if environment() == "development"
        else None
    )
    metrics_dir = _metrics_dir(config)
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    os.environ[OVERRIDES_ENV] = orjson.dumps(overrides).decode()
    s = config.server
    print(
        f"ensemble {__version__} serving on http://{s.host}:{s.port} with {s.workers} worker(s) "
        f"(config {args.config})",
        file=sys.stderr,
        flush=True,
    )
    server = Granian(
        "ensemble.server.app:create_app",
        factory=True,
        address=s.host,
        port=s.port,
        interface=Interfaces.RSGI,
        loop=Loops.uvloop,
        workers=s.workers,
        # A worker that dies (SIGKILL, OOM, a crash) is replaced; the replacement records its
        # in-flight requests as failed (usage/journal.py). Two deaths of one worker within 5.5 s
        # are a crash loop, and Granian exits.
        respawn_failed_workers=True,
        backlog=2048,
        # Granian admits at most `backpressure` concurrent requests per worker (default backlog /
        # workers = 2048). Streams are long-lived and mostly idle, so one worker must hold far more
        # (the soak benchmark runs 10,000); overload is bounded by rate limits, not by this.
        backpressure=STREAMS_PER_WORKER,
        # Granian (hyper) closes a connection whose next request head has not fully arrived within
        # this: a client idling on a keep-alive connection, or sending its head slowly. A connection
        # that never sends a byte is not timed by Granian 2.8.
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, int(s.idle_timeout * 1000)), max_buffer_size=65_536 + 8192
        ),
        workers_kill_timeout=max(1, int(s.drain_timeout) + 5),
        log_enabled=True,
        log_level=config.logging.level,  # type: ignore[arg-type]
        log_access=False,
    )
    logs.configure(config.logging.level, config.logging.format)  # this process logs reloads
    # SIGHUP reloads the config in every worker instead of Granian's respawn (see server/reload.py);
    # installed once Granian has set up its own handlers, before the workers are forked.
    server.on_startup(lambda: reload.forward_sighup(served_config, str(args.config)))
    pid_path = pidfile.path_for(config)
    pidfile.write(pid_path)
    if notice is not None:
        notice.start()
    try:
        server.serve()
    finally:
        if notice is not None:
            notice.stop()
        pidfile.remove(pid_path)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    """Check the config, then tell the running server (found by its pid file) to reload it."""
    import signal

    from ensemble.server import pidfile

    config = _load(args.config)
    path = pidfile.path_for(config)
    try:
        pid = pidfile.running_server(path)
    except LookupError as e:
        _err(
            f"{e} (is `ensemble serve --config {args.config}` running on this machine? The pid file "
            "is in the directory of database.path; if that changed since the server started, it "
            "needs a restart anyway)"
        )
        return 1
    os.kill(pid, signal.SIGHUP)
    print(f"sent SIGHUP to ensemble serve (pid {pid}); its workers reload {args.config} and log the outcome")
    return 0


def _metrics_dir(config: Config) -> str | None:
    """Several workers: prometheus-client's multiprocess mode in a fresh directory for this run, so
    counts aggregate across workers and never include a previous run's (set before workers start)."""
    if config.server.workers <= 1 or not config.telemetry.prometheus:
        return None
    path = tempfile.mkdtemp(prefix="ensemble-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    before, after = _migrate(config)
    print(
        f"{config.database.path}: schema version {before} -> {after}"
        if before != after
        else f"{config.database.path}: schema is current (version {after})"
    )
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from ensemble.storage.redis import display_address  # imports the Redis client: only here

    config = _load(args.config)
    s = config.server
    print(f"{args.config}: OK")
    print(
        f"  server: {s.host}:{s.port}, {s.workers} worker(s), max request {s.max_request_bytes} bytes, "
        f"drain {format_duration(s.drain_timeout)}, on disconnect: {s.on_client_disconnect}, "
        f"busy poll {format_duration(s.busy_poll) if s.busy_poll else 'off'}"
    )
    print(f"  database: {config.database.path}")
    print(
        f"  redis: {display_address(config.redis.address) or '(none: local rate limits)'}; "
        f"s3: {config.persistence.s3.bucket or '(none: responses in SQLite)'}"
    )
    print(f"  providers ({len(config.providers)}):")
    for p in sorted(config.providers, key=lambda p: (p.priority, p.name)):
        needs_key = registry.kind(p.type).needs_credential(p)
        usable = sum(1 for e in p.endpoints if e.api_key or not needs_key)
        print(
            f"    {p.name} [{p.type}] priority {p.priority}, {p.strategy}: {len(p.models)} model(s), "
            f"{usable}/{len(p.endpoints)} endpoint(s) with a credential"
        )
    return 0


def _publish_key(config: Config, digest: bytes, record: keys.KeyRecord) -> bool:
    """With Redis configured, every instance learns the key through it (instances share no SQLite)."""
    if not config.redis.address:
        return True
    from ensemble.storage import keysync
    from ensemble.storage import redis as shared

    client = shared.connect_sync(config.redis)
    try:
        keysync.publish_sync(client, shared.namespace(config.redis), digest, record)
    except Exception as e:  # redis/network errors: the key exists locally; say it was not shared
        _err(
            f"could not publish key {record.key_id} to Redis at "
            f"{shared.display_address(config.redis.address)} ({type(e).__name__}); it is saved here, "
            "and the servers of this instance share it with the others as soon as Redis is back"
        )
        return False
    finally:
        client.close()
    return True


def cmd_keys_create(args: argparse.Namespace) -> int:
    config = _load(args.config)
    for name, value in (("--rpm", args.rpm), ("--tpm", args.tpm)):
        if value < 0:
            _err(f"{name} must not be negative (0 means the config default)")
            return EXIT_CONFIG
    models = [m.strip() for m in (args.models or "").split(",") if m.strip()]
    _migrate(config)
    conn = database.connect_sync(config.database.path)
    try:
        key, record = keys.create_key(
            conn, name=args.name, customer_id=args.customer or "", rpm=args.rpm, tpm=args.tpm, models=models
        )
    finally:
        conn.close()
    published = _publish_key(config, keys.digest(key), record)
    if not config.redis.address:
        # A server of this config running here loads the key from the database within a second:
        # return once it has, so that `export ENSEMBLE_KEY=$(ensemble keys create …)` followed by a
        # request works as pasted. (Through Redis every instance learns it at once.)
        wait_until_accepted(local_url(config), key)
    print(key)
    print(
        f"key id {record.key_id} ({record.name}); store the key now: it is not shown again", file=sys.stderr
    )
    return 0 if published else 1


def cmd_keys_list(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _migrate(config)
    conn = database.connect_sync(config.database.path)
    try:
        records = keys.list_keys(conn)
    finally:
        conn.close()
    if args.json:
        print(orjson.dumps([r.as_json() for r in records]).decode())
        return 0
    print(f"{'KEY ID':<22} {'PREFIX':<13} {'STATUS':<9} {'RPM':>6} {'TPM':>9}  {'NAME':<20} MODELS")
    for r in records:
        print(
            f"{r.key_id:<22} {r.prefix + '…':<13} {r.status:<9} {r.rate_limit_rpm:>6} {r.rate_limit_tpm:>9}  "
            f"{r.name[:20]:<20} {','.join(r.allowed_models) or '(all)'}"
        )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    config = _load(args.config)
    _migrate(config)
    conn = database.connect_sync(config.database.path)
    try:
        found = keys.set_status(conn, args.key_id, "revoked")
    finally:
        conn.close()
    if config.redis.address:
        # The key may have been created on another instance: revoke the shared record.
        shared_found = _revoke_shared(config, args.key_id)
        if shared_found is None:
            return 1
        found = found or shared_found
    if not found:
        _err(f"no key with id {args.key_id!r} (see `ensemble keys list`)")
        return 1
    print(f"revoked {args.key_id}; running servers refuse it within a second")
    return 0


def _revoke_shared(config: Config, key_id: str) -> bool | None:
    from ensemble.storage import keysync
    from ensemble.storage import redis as shared

    client = shared.connect_sync(config.redis)
    ns = shared.namespace(config.redis)
    try:
        hit = keysync.find_sync(client, ns, key_id)
        if hit is None:
            return False
        digest, record = hit
        keysync.publish_sync(client, ns, digest, msgspec.structs.replace(record, status="revoked"))
    except Exception as e:  # redis/network errors
        _err(
            f"could not revoke {key_id} in Redis at {shared.display_address(config.redis.address)} "
            f"({type(e).__name__}); the revoke applies on this instance now and reaches the others "
            "as soon as Redis is back (if the key is in this instance's database)"
        )
        return None
    finally:
        client.close()
    return True


def cmd_version(args: argparse.Namespace) -> int:
    from ensemble import _native

    print(f"ensemble {__version__} (native {_native.__version__}, {_native.build_profile} build)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ensemble",
        description="Ensemble: an LLM inference gateway for Anthropic, OpenAI, Gemini, xAI and OpenRouter.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            default=DEFAULT_CONFIG,
            metavar="PATH",
            help=f"main config file; provider files are read from providers/ beside it (default {DEFAULT_CONFIG})",
        )
        return p

    serve = with_config(sub.add_parser("serve", help="run the gateway (migrates the database first)"))
    serve.add_argument(
        "--host",
        help="address to listen on (default: server.host; if empty, 127.0.0.1 in development, else 0.0.0.0)",
    )
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 5180)")
    serve.add_argument("--workers", type=int, help="worker processes (default: server.workers, 1)")
    serve.set_defaults(func=cmd_serve)

    with_config(sub.add_parser("migrate", help="create or upgrade the SQLite schema")).set_defaults(
        func=cmd_migrate
    )

    with_config(
        sub.add_parser(
            "reload",
            help="check the config, then make the running server reload it (SIGHUP; no requests are dropped)",
        )
    ).set_defaults(func=cmd_reload)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    with_config(
        cfg_sub.add_parser("check", help="validate the config; list every problem as file: key: problem")
    ).set_defaults(func=cmd_config_check)

    keys_p = sub.add_parser("keys", help="manage client API keys in the local database")
    keys_sub = keys_p.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    create = with_config(keys_sub.add_parser("create", help="create a key and print it once"))
    create.add_argument("--name", required=True, help="a label for the key")
    create.add_argument("--customer", help="customer id the key belongs to")
    create.add_argument("--rpm", type=int, default=0, help="requests per window (0: rate_limit.default_rpm)")
    create.add_argument("--tpm", type=int, default=0, help="tokens per window (0: rate_limit.default_tpm)")
    create.add_argument("--models", help="comma-separated models the key may use (default: all)")
    create.set_defaults(func=cmd_keys_create)
    lst = with_config(keys_sub.add_parser("list", help="list keys (never the keys themselves)"))
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(func=cmd_keys_list)
    revoke = with_config(keys_sub.add_parser("revoke", help="revoke a key by its id"))
    revoke.add_argument("key_id", metavar="ID", help="the key id (key_…) from `ensemble keys list`")
    revoke.set_defaults(func=cmd_keys_revoke)

    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
