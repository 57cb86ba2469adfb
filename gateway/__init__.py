"""The gateway's app factory: wires settings, stores, providers, blueprints and hooks; nothing else."""
import dataclasses
import logging
import threading
import time

from flask import g, request

from gateway import applog, config as config_module, ids
from gateway.extensions import make_engine, make_redis
from gateway import memory
from gateway.handlers import chat, errors, health, models
from gateway.handlers import metrics as metrics_endpoint
from gateway import accounting
from gateway import metrics as metrics_module
from gateway.cache import exact
from gateway.cache.near import NearCache
from gateway.middleware import cors, ratelimit as ratelimit_hook
from gateway.middleware.auth import authenticate
from gateway.providers.anthropic import AnthropicProvider
from gateway.providers.breaker import Breakers
from gateway.providers.failover import Manager
from gateway.providers.gemini import GeminiProvider
from gateway.providers.openai import OpenAIProvider
from gateway.providers.registry import Registry
from gateway.providers import fetch, pools
from gateway.providers.transport import make_session
from gateway.ratelimit import RateLimiter
from gateway.ratelimit import backend_for as limiter_backend
from gateway.redisguard import RedisGuard
from gateway.store.keys import KeyCache
from gateway.store.logwriter import LogWriter
from gateway.store.pricing import PriceBook
from gateway.webapp import GatewayFlask

log = logging.getLogger("gateway")

PROVIDER_CLASSES = {"openai": OpenAIProvider, "anthropic": AnthropicProvider, "gemini": GeminiProvider}
_LAST_USED_FLUSH_SECONDS = 15.0
_MEMORY_CHECK_SECONDS = 5.0
_METRICS_FLUSH_SECONDS = 1.0


@dataclasses.dataclass
class Gateway:
    """Everything a request needs, created once per app (so once per worker)."""
    settings: object
    engine: object
    redis: object
    registry: Registry
    providers: dict
    sessions: dict
    manager: Manager
    keys: KeyCache
    prices: PriceBook
    log_writer: LogWriter
    cache: exact.ExactCache
    limiter: RateLimiter
    guard: RedisGuard
    activity: memory.Activity = None   # requests started and finished, counted around the WSGI app
    _started: bool = False

    @property
    def breakers(self):
        return self.manager.breakers

    def start_background(self):
        """Background work starts on the first request, in the worker, never in the gunicorn master."""
        if self._started:
            return
        self._started = True
        self.log_writer.start()  # also replays spool files a dead worker left behind
        threading.Thread(target=self._flush_loop, name="gateway-last-used", daemon=True).start()
        threading.Thread(target=self._memory_loop, name="gateway-memory", daemon=True).start()
        threading.Thread(target=self._metrics_loop, name="gateway-metrics", daemon=True).start()

    def _metrics_loop(self):
        while True:
            time.sleep(_METRICS_FLUSH_SECONDS)
            try:
                metrics_module.TALLY.flush()
                metrics_module.sample_log_writer(self.log_writer)
            except Exception:  # noqa: BLE001 - never worth a worker
                log.warning("could not write the metrics", exc_info=True)

    def _memory_loop(self):
        trimmer = memory.Trimmer()
        seen = self.activity.started
        while True:
            time.sleep(_MEMORY_CHECK_SECONDS)
            seen = self.memory_check(trimmer, seen)

    def memory_check(self, trimmer, seen):
        """Close upstream connections idle too long, then trim the heap if the worker was quiet: no request
        started since `seen` (requests started, as of the last check) and none in flight, held streams
        included. The trimmer is told how many connections were closed: their pages are given back only by a
        trim. Returns the requests started so far."""
        now_seen, in_flight = self.activity.reading()
        closed = 0
        for session in [*self.sessions.values(), *fetch.sessions_made()]:
            try:
                closed += pools.close_idle(session, self.settings.upstream_idle_seconds) or 0
            except Exception:  # noqa: BLE001 - never worth a worker
                log.warning("could not close idle upstream connections", exc_info=True)
        try:
            trimmer.tick(quiet=now_seen == seen and in_flight <= 0, released=closed)
        except Exception:  # noqa: BLE001 - never worth a worker
            log.warning("could not return freed memory to the system", exc_info=True)
        return now_seen

    def _flush_loop(self):
        while True:
            time.sleep(_LAST_USED_FLUSH_SECONDS)
            try:
                self.keys.flush_last_used()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.warning("could not record keys' last use; will retry", exc_info=True)


def build(settings):
    engine = make_engine(settings.database_url)
    redis_client = make_redis(settings.redis_url)
    if redis_client is None:
        log.info("REDIS_URL is not set: cache and rate limits use in-process stores (single process only)")
    registry = Registry(settings)
    providers = {name: PROVIDER_CLASSES[spec.kind](spec) for name, spec in registry.providers.items()}
    sessions = {name: make_session(settings.upstream_pool_size, max_body=settings.max_response_bytes)
                for name in providers}
    guard = RedisGuard()
    breakers = Breakers(settings.breaker_failures, settings.breaker_cooldown, redis_client,
                        namespace=settings.redis_namespace, guard=guard)
    manager = Manager(settings, registry, providers, sessions, breakers)
    ns = settings.redis_namespace
    return Gateway(
        settings, engine, redis_client, registry, providers, sessions, manager,
        keys=KeyCache(engine, settings.key_cache_seconds),
        prices=PriceBook(engine),
        log_writer=LogWriter(engine, settings.spool_dir, flush_interval=settings.log_flush_seconds),
        # Single-flight locks live 30 s past their holder's last renewal (cache/exact.py): a dead worker's lock goes.
        cache=exact.ExactCache(exact.backend_for(redis_client), namespace=ns, guard=guard,
                               near=_near_tier(settings, redis_client), max_hold=settings.deadline),
        limiter=RateLimiter(limiter_backend(redis_client), namespace=ns, fail_open=settings.ratelimit_fail_open,
                            guard=guard),
        guard=guard)


def _near_tier(settings, redis_client):
    """Only in front of Redis: the in-process store needs no second in-process tier."""
    if redis_client is None or settings.cache_near_seconds <= 0:
        return None
    return NearCache(settings.cache_near_seconds)


def create_app(settings=None):
    settings = settings or config_module.load()
    applog.configure(settings.log_level)
    app = GatewayFlask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    # Every answer in OpenAI's JSON shape: no HTML redirect for "/v1//chat/completions" (werkzeug merges the
    # slashes with a 308 whose body is HTML; GatewayFlask reads them as one instead), no empty text/html 200 for
    # an OPTIONS that is no CORS preflight (answered by cors.preflight when origins are configured): a 405.
    app.url_map.merge_slashes = False
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.json.sort_keys = False
    app.extensions["gateway"] = gw = build(settings)

    @app.before_request
    def _begin():
        g_ = g._get_current_object()  # each access through a proxy is a context look-up
        g_.start = time.perf_counter()
        g_.deadline = time.monotonic() + settings.deadline
        g_.request_id = ids.request_id()
        gw.start_background()
        answer = cors.preflight(settings.cors_origins)
        if answer is not None:
            return answer
        path = request.path
        if path.startswith("/v1/") or path == "/v1":
            g_.logged_path = True
            authenticate()
            ratelimit_hook.enforce()

    @app.after_request
    def _finish(resp):
        g_, headers = g._get_current_object(), resp.headers
        headers.add("X-Request-Id", g_.get("request_id", ""))  # only set here
        if "X-Provider" not in headers:
            headers["X-Provider"] = g_.get("provider") or "gateway"
        cors.decorate(settings.cors_origins, resp)
        ratelimit_hook.headers(resp)
        if g_.get("logged_path") and not g_.get("deferred"):
            accounting.record(gw, resp.status_code)
        if "X-Latency-Ms" not in headers and "start" in g_:
            headers["X-Latency-Ms"] = str(int((time.perf_counter() - g_.start) * 1000))
        return resp

    errors.register(app)
    for bp in (chat.bp, models.bp, health.bp, metrics_endpoint.bp):
        app.register_blueprint(bp)
    gw.activity = app.wsgi_app = memory.Activity(app.wsgi_app)
    return app
