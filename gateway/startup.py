"""Start-up checks, run once by the gunicorn master before it takes traffic (gunicorn.conf.py)."""
import logging

from sqlalchemy import text

log = logging.getLogger("gateway")

KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}


class NotReady(Exception):
    pass


def check(settings):
    """Warn about what degrades the gateway; raise NotReady for what stops it working at all."""
    from gateway.extensions import make_engine, make_redis
    from gateway.store.migrate import is_current

    for provider, variable in KEY_VARIABLES.items():
        if not settings.provider_key(provider):
            log.warning("%s is not set: %s models are skipped in failover chains and answer 503", variable, provider)
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:  # noqa: BLE001
        log.warning("the database is not reachable (%s): request logs go to the spool until it is", type(e).__name__)
    else:
        if not is_current(engine, settings.database_url):
            raise NotReady("the database schema is not current: run `gateway db upgrade` (the Procfile's release step)")
    finally:
        engine.dispose()
    client = make_redis(settings.redis_url)
    if client is None and settings.web_concurrency > 1:
        log.warning("WEB_CONCURRENCY is %d without REDIS_URL: each worker keeps its own cache and rate "
                    "limits, so a key may get up to %d times its limit; set REDIS_URL",
                    settings.web_concurrency, settings.web_concurrency)
    if client is not None:
        try:
            client.ping()
        except Exception as e:  # noqa: BLE001
            log.warning("Redis is not reachable (%s): the cache is skipped and rate limits fail %s until it is",
                        type(e).__name__, "open" if settings.ratelimit_fail_open else "closed")


def main():
    import sys
    from gateway import applog, config
    try:
        settings = config.load()
        applog.configure(settings.log_level)
        check(settings)
    except (config.ConfigError, NotReady) as e:
        sys.stderr.write(f"gateway: {e}\n")
        sys.exit(4)


if __name__ == "__main__":
    main()
