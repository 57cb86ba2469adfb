"""The `gateway` command: db, keys, serve, simulate."""
import argparse
import os
import sys

from gateway import config as config_module

_INT_MAX = 2 ** 31 - 1  # an SQL INTEGER column


def _settings():
    try:
        return config_module.load()
    except config_module.ConfigError as e:
        sys.exit(f"gateway: configuration error: {e}")


def _engine(settings):
    """The database's engine, once it has answered: an unreachable database is one line naming where it was
    looked for, not the driver's traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError
    from gateway.extensions import make_engine
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        where = f"the SQLite database {url.database}"
    else:
        where = f"the database at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    try:
        engine = make_engine(settings.database_url)
        with engine.connect():
            pass
    except OSError as e:   # the SQLite file's directory could not be made
        sys.exit(f"gateway: cannot open {where}: {e.strerror or e}")
    except DBAPIError as e:
        reason = (str(e.orig).strip().splitlines() or [type(e.orig).__name__])[0]
        if url.password:   # the driver's messages do not echo it, but never print it whatever they say
            reason = reason.replace(url.password, "***")
        sys.exit(f"gateway: cannot reach {where}: {reason}")
    return engine


def _column_length(column, option, value):
    if len(value) > column.type.length:
        sys.exit(f"gateway: {option} is {len(value)} characters long; at most {column.type.length} fit")


def cmd_db_upgrade(args):
    from gateway.store.migrate import upgrade
    settings = _settings()
    _engine(settings).dispose()
    upgrade(settings.database_url)
    print("database is up to date")


def cmd_keys_create(args):
    from gateway.store.keys import create_key
    from gateway.store.models import api_keys
    if not args.name.strip():
        sys.exit("gateway: --name must not be empty: it is how the key is told apart in listings and reports")
    _column_length(api_keys.c.name, "--name", args.name)
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


def _check_price(option, raw, column):
    """A price the column cannot hold: PostgreSQL refuses it with a numeric overflow (SQLite stores it)."""
    from decimal import Decimal, InvalidOperation
    if raw is None:
        return
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        return   # set_price says what is wrong with it
    limit = Decimal(10) ** (column.type.precision - column.type.scale)
    if value.is_finite() and value >= limit:
        sys.exit(f"gateway: {option} must be less than {limit:f} USD per 1M tokens, got {raw}")


def cmd_pricing_set(args):
    from gateway.store.models import model_pricing
    from gateway.store.pricing import set_price
    _column_length(model_pricing.c.model, "the model name", args.model.strip())
    if args.provider is not None:
        _column_length(model_pricing.c.provider, "--provider", args.provider.strip())
    for option, raw, column in (("--input", args.input, model_pricing.c.input_per_million),
                                ("--output", args.output, model_pricing.c.output_per_million),
                                ("--cached-input", args.cached_input, model_pricing.c.cached_input_per_million),
                                ("--cache-write", args.cache_write, model_pricing.c.cache_write_per_million)):
        _check_price(option, raw, column)
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
    # Both are INTEGER columns: PostgreSQL refuses more than 2**31 - 1 with a traceback.
    if getattr(args, "rate_limit", None) is not None and not 1 <= args.rate_limit <= _INT_MAX:
        sys.exit(f"gateway: --rate-limit must be from 1 to {_INT_MAX}")
    if not 1 <= getattr(args, "cache_ttl", 1) <= _INT_MAX:
        sys.exit(f"gateway: --cache-ttl must be from 1 to {_INT_MAX} seconds")
    args.func(args)


if __name__ == "__main__":
    main()
