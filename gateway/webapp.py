"""The gateway's Flask: two answers Flask works out on every request, remembered instead.

- Whether a view or hook is a coroutine: Flask asks three or four times per request, and the gateway has no
  async views. Kept for at most KEPT functions: one made per request (after_this_request's) must not pile up.
- Which route a request takes: Flask binds a URL adapter to each request (reading the host, scheme and script
  name) and runs werkzeug's matcher, ~7% of a cache hit's CPU (py-spy). The gateway's routes are fixed paths,
  so for a route without variables the answer depends only on the method and the path: it is kept per
  (method, path), for at most KEPT pairs, and the adapter is bound only when something else needs it.
  Anything the matcher answers with an exception (404, 405, a redirect) is never kept, so it is asked again.
- Doubled slashes in a path ("/v1//chat/completions", what a base URL ending in "/" gives a client that joins
  with "/") are read as one: werkzeug's own way is a 308 redirect with an HTML body, off (gateway/__init__.py).
"""
import re

from flask import Flask

_SLASHES = re.compile("/{2,}")

KEPT = 256


class _Adapter:
    """Stands in for the request's URL adapter: answers `match` from the app's memo, binds the real one
    (as Flask would have) for anything else."""
    __slots__ = ("_app", "_request", "_bound")

    def __init__(self, app, request):
        self._app, self._request, self._bound = app, request, None

    def _real(self):
        if self._bound is None:
            self._bound = Flask.create_url_adapter(self._app, self._request)
        return self._bound

    def match(self, path_info=None, method=None, return_rule=False, query_args=None, websocket=None):
        if path_info is not None or method is not None or query_args is not None or websocket is not None:
            return self._real().match(path_info, method, return_rule, query_args, websocket)
        environ = self._request.environ
        key = (environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), return_rule)
        routes = self._app._routes
        target = routes.get(key)
        if target is not None:
            return target, {}  # a new dict each time: Flask hands it to the view, which may change it
        target, args = self._real().match(return_rule=return_rule)
        if not args and len(routes) < KEPT:
            routes[key] = target
        return target, args

    def __getattr__(self, name):
        return getattr(self._real(), name)


class GatewayFlask(Flask):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync = {}
        self._routes = {}  # (method, path, return_rule) -> the rule (or endpoint) matched, for routes without variables

    def wsgi_app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if "//" in path:
            environ["PATH_INFO"] = _SLASHES.sub("/", path)
        return super().wsgi_app(environ, start_response)

    def ensure_sync(self, func):
        try:
            return self._sync[func]
        except KeyError:
            synced = super().ensure_sync(func)
            if len(self._sync) < KEPT:
                self._sync[func] = synced
            return synced

    def create_url_adapter(self, request):
        plain = (request is not None and self.config["TRUSTED_HOSTS"] is None and not self.subdomain_matching
                 and not self.url_map.host_matching)
        if not plain:
            return super().create_url_adapter(request)  # Flask's own checks and bindings
        return _Adapter(self, request)
