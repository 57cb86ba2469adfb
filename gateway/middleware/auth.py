"""The `before_request` hook that admits only requests carrying a live gateway key."""
from flask import current_app, g, request

from gateway.handlers.errors import ApiError
from gateway.store.keys import KeyStoreUnavailable, looks_like_key

_MISSING = ("You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")


def _unauthorized(message):
    return ApiError(401, message, "invalid_request_error", None, "invalid_api_key")


def authenticate():
    header = request.headers.get("Authorization", "")
    if not header:
        raise _unauthorized(_MISSING)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("Malformed Authorization header: expected 'Bearer gw_...'.")
    if not looks_like_key(token):
        raise _unauthorized("Incorrect API key provided: this is not a gateway key (they are 'gw_' and 43 more "
                            "characters)." if token.startswith("gw_") else
                            "Incorrect API key provided. Gateway keys start with 'gw_'.")
    try:
        info = current_app.extensions["gateway"].keys.lookup(token)
    except KeyStoreUnavailable:
        raise ApiError(503, "The gateway cannot check API keys right now (its database is unreachable). "
                       "Please retry shortly.", "server_error", None, "service_unavailable",
                       headers={"Retry-After": "1"}) from None
    if info is None:
        raise _unauthorized(f"Incorrect API key provided: {token[:7]}****. The key is unknown or revoked.")
    g.api_key = info
