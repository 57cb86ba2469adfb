"""Gemini HTTP errors and stream error events (Google RPC errors) → UpstreamError carrying an OpenAI error
object."""
import json
import math
import re

from gateway.translate.common import UpstreamError, error_object

# Gemini HTTP status → OpenAI error (type, code); other statuses: server_error from 500 up, else
# invalid_request_error.
ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", None),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}
# Gemini answers a bad key with 400 INVALID_ARGUMENT + this reason: the key is the gateway's, not the client's.
PROVIDER_KEY_REASONS = frozenset({"API_KEY_INVALID"})
UPSTREAM_AUTH_CODE = "upstream_auth_failed"  # the code the failover manager uses for the same case
_CONTEXT_LENGTH = re.compile(r"input token count.*exceeds the maximum number of tokens", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def error_from_gemini(status, body, text, retry_after=None):
    """A Google RPC error (`{"error": {code, message, status, details}}`) → UpstreamError.

    The provider's message and status are kept (`upstream_status` is always Gemini's own), except:
    * a rejected provider key, which Gemini reports as 400 INVALID_ARGUMENT + API_KEY_INVALID: that key is
      the gateway's, so it must neither reach the client as "your request is wrong" (400) nor as "your key
      is wrong" (401). It becomes what the failover manager makes of a 401/403 — 502 `upstream_error` /
      `upstream_auth_failed` with `reason="auth"` — so it fails over instead of being final;
    * a too-long prompt, which becomes OpenAI's 400 `context_length_exceeded`.
    401/403 stay as they are: the failover manager already treats them as our credential problem.
    """
    error = _rpc_error(body, text)
    message = str(error.get("message") or f"Gemini answered HTTP {status} without an error body.")
    details = [d for d in error.get("details") or [] if isinstance(d, dict)] if isinstance(
        error.get("details"), list) else []
    type_, code = ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    answer, param, reason = status, None, None
    if PROVIDER_KEY_REASONS & {d.get("reason") for d in details if isinstance(d.get("reason"), str)}:
        answer, type_, code, reason = 502, "upstream_error", UPSTREAM_AUTH_CODE, "auth"
        message = f"Gemini rejected the gateway's provider API key: {message}"
    elif error.get("status") == "FAILED_PRECONDITION":
        # The gateway's key cannot be served where it is, or its project has no billing (reference C.5): the
        # operator's problem, failed over as such (failover.Manager.own_view, reason "account").
        reason = "account"
    elif _CONTEXT_LENGTH.search(message):
        answer, type_, param, code = 400, "invalid_request_error", "messages", "context_length_exceeded"
    elif status == 429 and retry_after is None:
        retry_after = _retry_delay(details)
    return UpstreamError(answer, error_object(message, type_, param, code), retry_after, status, reason)


def _rpc_error(body, text):
    if body is None and text:
        try:
            body = json.loads(text)
        except ValueError:
            return {}
    if isinstance(body, list) and len(body) == 1:  # the non-SSE stream wraps errors in an array
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _retry_delay(details):
    """Seconds from google.rpc.RetryInfo `retryDelay` (a Duration such as "59s"), rounded up."""
    for detail in details:
        match = _DURATION.match(str(detail.get("retryDelay", "")).strip())
        if match:
            return math.ceil(float(match.group(1)))
    return None
