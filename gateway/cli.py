"""The `gateway` command: db, keys, serve, simulate."""
import argparse
import os
import sys

from gateway import config as config_module


def _settings():
    try:
        return config_module.load()
    except config_module.ConfigError as e:
        sys.exit(f"gateway: configuration error: {e}")


def _engine(settings):
    from gateway.extensions import make_engine
    return make_engine(settings.database_url)


def cmd_db_upgrade(args):
    from gateway.store.migrate import upgrade
    settings = _settings()
    upgrade(settings.database_url)
    print("database is up to date")


def cmd_keys_create(args):
    from gateway.store.keys import create_key
    settings = _settings()
    key, key_id = create_key(_engine(settings), args.name, args.rate_limit, not args.no_cache, args.cache_ttl)
    print(f"created key {key_id} ({key[:11]}) named {args.name!r}; it is shown only once:")
    print(key)


def _fmt_time(value):
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "never"


def cmd_keys_list(args):
    from gateway.store.keys import list_keys
    rows = list_keys(_engine(_settings()))
    print(f"{'id':>5}  {'prefix':<12} {'name':<24} {'rpm':>6} {'cache':>7} {'last used':<20} status")
    for r in rows:
        cache = f"{r.cache_ttl_seconds}s" if r.cache_enabled else "off"
        status = "revoked" if r.revoked_at else "active"
        rpm = r.rate_limit_per_minute if r.rate_limit_per_minute is not None else "-"
        print(f"{r.id:>5}  {r.key_prefix:<12} {r.name[:24]:<24} {rpm:>6} {cache:>7} {_fmt_time(r.last_used_at):<20} {status}")


def cmd_keys_revoke(args):
    from gateway.store.keys import revoke_key
    try:
        n = revoke_key(_engine(_settings()), args.key)
    except ValueError as e:
        sys.exit(f"gateway: {e}")
    if not n:
        sys.exit(f"gateway: no active key matches {args.key!r}")
    print(f"revoked {args.key}")


def cmd_pricing_list(args):
    from gateway.store.pricing import list_prices
    rows = list_prices(_engine(_settings()))
    print(f"{'model':<32} {'provider':<10} {'input':>10} {'output':>10} {'cached in':>10} {'cache write':>11}  effective from")
    dash = "-"
    for p in rows:
        print(f"{p.model:<32} {p.provider:<10} {p.input_per_million:>10} {p.output_per_million:>10} "
              f"{p.cached_input_per_million or dash:>10} {p.cache_write_per_million or dash:>11}  "
              f"{p.effective_from:%Y-%m-%d %H:%M}")


def _provider_of(model):
    from gateway.providers.registry import Registry
    m = Registry(_settings()).resolve(model)
    return m.provider if m is not None else None


def cmd_pricing_set(args):
    from gateway.store.pricing import set_price
    provider = args.provider or _provider_of(args.model)
    if not provider:
        sys.exit(f"gateway: {args.model!r} is not in the model table; say which provider with --provider")
    try:
        set_price(_engine(_settings()), args.model, provider, args.input, args.output, args.cached_input,
                  args.cache_write)
    except ValueError as e:
        sys.exit(f"gateway: {e}")
    print(f"price for {args.model} set: input {args.input}, output {args.output} USD per 1M tokens (effective now)")


def cmd_report(args):
    from gateway.store.report import format_table, parse_since, report
    try:
        since = parse_since(args.since)
    except ValueError as e:
        sys.exit(f"gateway: {e}")
    rows = report(_engine(_settings()), since, args.by)
    print(format_table(rows, args.by))


def cmd_serve(args):
    # gunicorn.conf.py checks these too, but gunicorn reads WEB_CONCURRENCY with int() as it is imported,
    # before the file runs: a bad one would be a traceback there.
    try:
        config_module.serving()
    except config_module.ConfigError as e:
        sys.exit(f"gateway: configuration error: {e}")
    # The current directory stays the caller's, as for every other subcommand: a relative GATEWAY_CONFIG,
    # GATEWAY_INSTANCE_DIR (the SQLite default) or GATEWAY_SPOOL_DIR means here what it meant to `gateway db
    # upgrade`. gunicorn finds its file by its full path and wsgi.py on --pythonpath.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", os.path.join(root, "gunicorn.conf.py"),
                               "--pythonpath", root, "wsgi:app"])


def parser():
    p = argparse.ArgumentParser(prog="gateway", description="An OpenAI-compatible LLM gateway.")
    sub = p.add_subparsers(dest="command", required=True)

    db = sub.add_parser("db", help="database migrations").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply every pending migration").set_defaults(func=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="gateway API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="make a key; prints it once, alone on the last line")
    create.add_argument("--name", required=True)
    create.add_argument("--rate-limit", type=int, default=None, help="requests per minute (default: none)")
    create.add_argument("--no-cache", action="store_true", help="never answer this key from the cache")
    create.add_argument("--cache-ttl", type=int, default=3600, help="cache entry lifetime in seconds")
    create.set_defaults(func=cmd_keys_create)
    keys.add_parser("list", help="list keys (never the key itself)").set_defaults(func=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key", help="numeric id or displayed prefix (gw_xxxxxxxx)")
    revoke.set_defaults(func=cmd_keys_revoke)

    pricing = sub.add_parser("pricing", help="model prices").add_subparsers(dest="pricing_command", required=True)
    pricing.add_parser("list", help="the price in force per model").set_defaults(func=cmd_pricing_list)
    setp = pricing.add_parser("set", help="a new price, effective now (history is kept)")
    setp.add_argument("model")
    setp.add_argument("--input", required=True, help="USD per 1M input tokens")
    setp.add_argument("--output", required=True, help="USD per 1M output tokens")
    setp.add_argument("--cached-input", default=None, help="USD per 1M cached input tokens")
    setp.add_argument("--cache-write", default=None, help="USD per 1M prompt-cache write tokens")
    setp.add_argument("--provider", default=None, help="needed for a model not in the model table")
    setp.set_defaults(func=cmd_pricing_set)

    rep = sub.add_parser("report", help="requests, tokens, spend and latency per model, key, customer, ...")
    rep.add_argument("--since", default="7d", help="how far back: 30m, 24h, 7d (default 7d)")
    rep.add_argument("--by", default="model", choices=["model", "provider", "key", "customer", "feature", "day"])
    rep.set_defaults(func=cmd_report)

    sub.add_parser("serve", help="run gunicorn with gevent workers").set_defaults(func=cmd_serve)
    sub.add_parser("simulate", help="run the provider simulator (gateway simulate --help for its options)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["simulate"]:
        # The simulator has its own options; argparse's REMAINDER would reject them after a subcommand.
        from gateway.simulator import main as simulate
        return simulate(argv[1:])
    args = parser().parse_args(argv)
    if getattr(args, "rate_limit", None) is not None and args.rate_limit < 1:
        sys.exit("gateway: --rate-limit must be at least 1")
    if getattr(args, "cache_ttl", 1) < 1:
        sys.exit("gateway: --cache-ttl must be at least 1")
    args.func(args)


if __name__ == "__main__":
    main()
