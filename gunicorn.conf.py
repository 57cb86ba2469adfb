"""gunicorn settings, all in one place (the Procfile, `make run` and `gateway serve` use this file)."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# Each open stream holds a connection for its whole life: leave room for thousands per worker.
worker_connections = int(os.environ.get("GATEWAY_WORKER_CONNECTIONS", "4000"))
# gevent workers heartbeat from their event loop, so a long healthy stream never trips this.
timeout = int(os.environ.get("GATEWAY_WORKER_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GATEWAY_GRACEFUL_TIMEOUT", "120"))
# Idle keep-alive connections hold a worker's graceful stop until they time out: keep them short.
# (nginx reconnects at no cost; see deploy/nginx.conf.)
keepalive = int(os.environ.get("GATEWAY_KEEPALIVE", "5"))
max_requests = int(os.environ.get("GATEWAY_MAX_REQUESTS", "0"))
max_requests_jitter = max(1, max_requests // 10) if max_requests else 0
forwarded_allow_ips = os.environ.get("GATEWAY_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = os.environ.get("GATEWAY_ACCESS_LOG", "-") or None
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'
errorlog = "-"
loglevel = os.environ.get("GATEWAY_LOG_LEVEL", "info").lower()
preload_app = False
