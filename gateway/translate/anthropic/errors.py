"""Anthropic HTTP errors and stream error events → UpstreamError carrying an OpenAI error object."""
from gateway.translate.common import UpstreamError, error_object

# Anthropic error.type → (status Anthropic sends, OpenAI type, OpenAI code) (reference B.6, D.7). Types
# copy OpenAI's verbatim bodies where the reference has one (a missing model is invalid_request_error /
# model_not_found); else they keep Anthropic's name: OpenAI SDKs pick exceptions by status, not type.
_ERRORS = {
    "invalid_request_error": (400, "invalid_request_error", None),
    "authentication_error": (401, "authentication_error", "invalid_api_key"),
    "billing_error": (402, "insufficient_quota", "insufficient_quota"),
    "permission_error": (403, "permission_error", None),
    "not_found_error": (404, "invalid_request_error", "model_not_found"),
    "request_too_large": (413, "invalid_request_error", "request_too_large"),
    "rate_limit_error": (429, "rate_limit_error", "rate_limit_exceeded"),
    "api_error": (500, "server_error", None),
    "timeout_error": (504, "timeout_error", "timeout"),
    "overloaded_error": (529, "service_unavailable_error", "overloaded"),
}
_KIND_BY_STATUS = {status: kind for kind, (status, _, _) in _ERRORS.items()}
# 529 is Anthropic's own; OpenAI clients know 503 as "overloaded, retry later".
_GATEWAY_STATUS = {529: 503}
# Anthropic says "prompt is too long: 208310 tokens > 200000 maximum" or "input length and
# `max_tokens` exceed context limit: ..."; OpenAI clients look for code context_length_exceeded.
_CONTEXT_LENGTH = ("prompt is too long", "exceed context limit")
# The gateway's Anthropic account out of credit: 402 billing_error, or (the body public reports show) 400
# invalid_request_error "Your credit balance is too low to access the Anthropic API. ..." (reference D.7). The
# operator's problem, not the client's request: failed over, never returned as the client's 400 (see
# failover.Manager.own_view, reason "account").
_OUT_OF_CREDIT = "credit balance is too low"


def error_from_anthropic(status, body, text, retry_after=None):
    """An Anthropic HTTP error (parsed JSON body, or None if it was not JSON, and the raw text)
    → UpstreamError carrying an OpenAI error object."""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return _upstream_error(error.get("type"), error["message"], status, retry_after)
    snippet = (text or "").strip()[:200]
    message = f"Anthropic API returned HTTP {status}" + (f": {snippet}" if snippet else ".")
    return _upstream_error(None, message, status, retry_after)


def _upstream_error(kind, message, status, retry_after=None):
    kind = kind if kind in _ERRORS else _KIND_BY_STATUS.get(status)
    fallback = "invalid_request_error" if status < 500 else "server_error"
    _, type_, code = _ERRORS.get(kind, (status, fallback, None))
    param, reason = None, None
    lowered = str(message).lower()
    if any(phrase in lowered for phrase in _CONTEXT_LENGTH):
        code, param = "context_length_exceeded", "messages"
    elif kind == "billing_error" or _OUT_OF_CREDIT in lowered:
        reason = "account"
    return UpstreamError(_GATEWAY_STATUS.get(status, status), error_object(message, type_, param, code),
                         retry_after=retry_after, upstream_status=status, reason=reason)
