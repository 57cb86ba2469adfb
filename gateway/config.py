"""Every setting, read from the environment once, typed, validated, with its default.

A bad value stops start-up with a message that names the variable.
"""
import dataclasses
import math
import os
import re
import tomllib


class ConfigError(Exception):
    pass


def _int(env, name, default, minimum=0, maximum=None):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {value}")
    return value


def _float(env, name, default, minimum=0.0, minimum_allowed=False, infinity_allowed=False):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    # float() takes "nan" and "inf". NaN slips past the range check below (every comparison with it is false)
    # and breaks whatever uses it later: a NaN key cache never expires, a NaN deadline fails every cached
    # request. Infinity overflows the same conversions, so only a setting that documents `inf` takes it.
    if math.isnan(value) or (math.isinf(value) and not infinity_allowed):
        raise ConfigError(f"{name} must be a finite number of seconds, got {raw!r}")
    if value < minimum or (value == minimum and not minimum_allowed):
        raise ConfigError(f"{name} must be {'at least' if minimum_allowed else 'greater than'} {minimum}, "
                          f"got {value}")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env, name, default):
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _scheme_of(raw):
    """All of a bad URL a message may show: its scheme. The rest can hold a password
    (redis://:password@host), and a message goes to logs and terminals."""
    scheme, sep, _ = raw.partition("://")
    if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return f"scheme {scheme!r}"
    return "a value without a scheme:// (not shown: it may hold a password)"


def _url(env, name, default):
    raw = (env.get(name) or "").strip() or default
    if not raw.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {_scheme_of(raw)}")
    return raw.rstrip("/")


def database_url(raw):
    """Heroku writes `postgres://`; SQLAlchemy wants `postgresql+psycopg2://`."""
    if raw.startswith("postgres://"):
        return "postgresql+psycopg2://" + raw[len("postgres://"):]
    if raw.startswith("postgresql://"):
        return "postgresql+psycopg2://" + raw[len("postgresql://"):]
    return raw


def _database(env):
    raw = (env.get("DATABASE_URL") or "").strip()
    if not raw:
        instance = os.path.abspath(env.get("GATEWAY_INSTANCE_DIR") or "instance")
        return f"sqlite:///{os.path.join(instance, 'gateway.db')}"
    url = database_url(raw)
    if not url.startswith(("postgresql+psycopg2://", "sqlite://")):
        raise ConfigError(f"DATABASE_URL must be a postgres:// or sqlite:// URL, got {_scheme_of(raw)}")
    return url


def _redis(env):
    raw = (env.get("REDIS_URL") or "").strip()
    if raw and not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"REDIS_URL must be a redis://, rediss:// or unix:// URL, got {_scheme_of(raw)}")
    return raw or None


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # the levels gunicorn's loglevel knows too


def _log_level(env):
    raw = (env.get("GATEWAY_LOG_LEVEL") or "").strip()
    if not raw:
        return "INFO"
    if raw.upper() not in LOG_LEVELS:
        raise ConfigError(f"GATEWAY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw.upper()


def _port(env):
    # 0 lets the system pick a free port (gunicorn logs which).
    return _int(env, "PORT", 8080, minimum=0, maximum=65535)


def _web_concurrency(env):
    return _int(env, "WEB_CONCURRENCY", 2 if env.get("REDIS_URL") else 1, minimum=1)


def _worker_connections(env):
    return _int(env, "GATEWAY_WORKER_CONNECTIONS", 4000, minimum=1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Serving:
    """gunicorn's own settings. gunicorn.conf.py reads them here, so that a bad one stops the master with one
    line naming it, as a bad setting of the app does, not with a traceback from int()."""
    port: int
    workers: int
    worker_connections: int
    worker_timeout: int
    graceful_timeout: int
    keepalive: int
    max_requests: int
    log_level: str
    client_timeout: float | None


def serving(env=None):
    """Read and validate gunicorn's settings; raise ConfigError naming the first bad variable. 0 means what
    gunicorn makes of it: no heartbeat timeout, an immediate stop, no keep-alive, never recycle."""
    env = os.environ if env is None else env
    return Serving(
        port=_port(env),
        workers=_web_concurrency(env),
        worker_connections=_worker_connections(env),
        worker_timeout=_int(env, "GATEWAY_WORKER_TIMEOUT", 60),
        graceful_timeout=_int(env, "GATEWAY_GRACEFUL_TIMEOUT", 120),
        keepalive=_int(env, "GATEWAY_KEEPALIVE", 5),
        max_requests=_int(env, "GATEWAY_MAX_REQUESTS", 50000),
        log_level=_log_level(env),
        # How long a wait on a client may last: for it to take the next piece of an answer, or to send more
        # of its request body. A client that stops reading otherwise held its stream, and the upstream call
        # behind it, for as long as its connection stayed open.
        client_timeout=_float(env, "GATEWAY_CLIENT_TIMEOUT", 60.0, minimum_allowed=True) or None,  # 0: none
    )


def _file_config(env):
    path = (env.get("GATEWAY_CONFIG") or "").strip()
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"GATEWAY_CONFIG names a file that does not exist: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"GATEWAY_CONFIG file {path} is not valid TOML: {e}") from None


def _origins(env):
    raw = (env.get("GATEWAY_CORS_ORIGINS") or "").strip()
    return tuple(o.strip() for o in raw.split(",") if o.strip())


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    database_url: str
    redis_url: str | None
    provider_keys: dict = dataclasses.field(repr=False)
    base_urls: dict
    port: int
    web_concurrency: int
    file_config: dict
    connect_timeout: float
    read_timeout: float
    answer_timeout: float
    first_token_timeout: float
    deadline: float
    max_request_bytes: int
    max_response_bytes: int
    cors_origins: tuple
    upstream_pool_size: int
    upstream_idle_seconds: float
    key_cache_seconds: float
    log_level: str
    retry_after_cap: float
    retry_backoff: float
    breaker_failures: int
    breaker_cooldown: float
    metrics_token: str | None = dataclasses.field(default=None, repr=False)
    log_bodies: bool = False
    log_requests: bool = True
    log_flush_seconds: float = 0.5
    spool_dir: str = "instance/spool"
    ratelimit_fail_open: bool = True
    cache_shared: bool = False
    cache_near_seconds: float = 1.0
    redis_namespace: str = "gw:"
    fetch_private_urls: bool = False
    secret_env: dict = dataclasses.field(default_factory=dict, repr=False)

    def provider_key(self, provider):
        return self.provider_keys.get(provider)


def _secret(env, name):
    """A provider key, without the white space a secret mounted from a file often ends with (a newline in
    a header value is refused by the HTTP client)."""
    return (env.get(name) or "").strip() or None


def load(env=None):
    """Read and validate every setting; raise ConfigError naming the first bad variable."""
    env = os.environ if env is None else env
    keys = {
        "openai": _secret(env, "OPENAI_API_KEY"),
        "anthropic": _secret(env, "ANTHROPIC_API_KEY"),
        "gemini": _secret(env, "GEMINI_API_KEY") or _secret(env, "GOOGLE_API_KEY"),
    }
    file_config = _file_config(env)
    secret_env = {}
    for name, server in (file_config.get("providers") or {}).items():
        key_var = server.get("api_key_env") if isinstance(server, dict) else None
        if key_var:
            secret_env[name] = _secret(env, key_var)
    return Settings(
        database_url=_database(env),
        redis_url=_redis(env),
        provider_keys=keys,
        base_urls={
            "openai": _url(env, "OPENAI_BASE_URL", "https://api.openai.com/v1"),
            "anthropic": _url(env, "ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
            "gemini": _url(env, "GEMINI_BASE_URL", "https://generativelanguage.googleapis.com"),
        },
        port=_port(env),
        web_concurrency=_web_concurrency(env),
        file_config=file_config,
        connect_timeout=_float(env, "GATEWAY_CONNECT_TIMEOUT", 5.0),
        read_timeout=_float(env, "GATEWAY_READ_TIMEOUT", 120.0),
        # A non-streamed answer comes whole once generated: a reasoning model's can take minutes of silence.
        answer_timeout=_float(env, "GATEWAY_ANSWER_TIMEOUT", 300.0),
        first_token_timeout=_float(env, "GATEWAY_FIRST_TOKEN_TIMEOUT", 60.0),
        # Twice the answer timeout: a non-streamed answer the first model never gives still leaves the next as
        # long; and what OpenAI's SDKs wait by default (600 s).
        deadline=_float(env, "GATEWAY_DEADLINE", 600.0),
        max_request_bytes=_int(env, "GATEWAY_MAX_REQUEST_BYTES", 10 * 1024 * 1024, minimum=1024),
        # An upstream answer past this is refused (502 too_large), not read into memory to the end.
        max_response_bytes=_int(env, "GATEWAY_MAX_RESPONSE_BYTES", 64 * 1024 * 1024, minimum=65536),
        cors_origins=_origins(env),
        # As large as a worker's concurrency (gunicorn.conf.py's worker_connections): every open stream
        # holds one upstream connection, and a connection past the pool's size is not kept alive.
        upstream_pool_size=_int(env, "GATEWAY_UPSTREAM_POOL_SIZE", _worker_connections(env), minimum=1),
        # An upstream connection idle this long is closed (see providers/pools.py); httpx's default. `inf`
        # (documented): never.
        upstream_idle_seconds=_float(env, "GATEWAY_UPSTREAM_IDLE_SECONDS", 5.0, infinity_allowed=True),
        key_cache_seconds=_float(env, "GATEWAY_KEY_CACHE_SECONDS", 5.0),
        log_level=_log_level(env),
        retry_after_cap=_float(env, "GATEWAY_RETRY_AFTER_CAP", 3.0),
        retry_backoff=_float(env, "GATEWAY_RETRY_BACKOFF", 0.2),
        breaker_failures=_int(env, "GATEWAY_BREAKER_FAILURES", 3, minimum=1),
        breaker_cooldown=_float(env, "GATEWAY_BREAKER_COOLDOWN", 10.0),
        metrics_token=(env.get("GATEWAY_METRICS_TOKEN") or "").strip() or None,
        log_bodies=_bool(env, "GATEWAY_LOG_BODIES", False),
        log_requests=_bool(env, "GATEWAY_LOG_REQUESTS", True),
        log_flush_seconds=_float(env, "GATEWAY_LOG_FLUSH_SECONDS", 0.5),
        spool_dir=os.path.abspath(env.get("GATEWAY_SPOOL_DIR") or os.path.join(
            env.get("GATEWAY_INSTANCE_DIR") or "instance", "spool")),
        ratelimit_fail_open=_bool(env, "GATEWAY_RATELIMIT_FAIL_OPEN", True),
        cache_shared=_bool(env, "GATEWAY_CACHE_SHARED", False),
        cache_near_seconds=_float(env, "GATEWAY_CACHE_NEAR_SECONDS", 1.0, minimum_allowed=True),
        redis_namespace=(env.get("GATEWAY_REDIS_PREFIX") or "gw:"),
        fetch_private_urls=_bool(env, "GATEWAY_FETCH_PRIVATE_URLS", False),
        secret_env=secret_env,
    )
