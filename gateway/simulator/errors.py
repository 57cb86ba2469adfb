"""Each provider's error bodies, byte for byte as the wire-format reference records them.

Every function returns `(status_line, headers, body_bytes)` ready for `start_response`.
"""
import json
from http import HTTPStatus

import orjson

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS.update({499: "Client Closed Request", 529: "Overloaded"})


def status_line(code):
    return f"{code} {_REASONS.get(code, 'Error')}"


def gjson(obj):
    """Google's encoder: `": "` after keys, no space after commas, `<`/`>` escaped."""
    text = json.dumps(obj, separators=(",", ": "), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").encode()


JSON = "application/json"
GEMINI_JSON = "application/json; charset=UTF-8"


def _headers(ctype, extra):
    return [("Content-Type", ctype)] + list(extra or ())


# ---------------------------------------------------------------- OpenAI

def openai_error(code, message, type_="invalid_request_error", param=None, err_code=None, headers=None):
    body = orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": err_code}})
    return status_line(code), _headers(JSON, headers), body


OPENAI_NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header using "
                 "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) "
                 "if you're accessing the API from your browser and are prompted for a username. You can obtain an "
                 "API key from https://platform.openai.com/account/api-keys.")
OPENAI_BAD_JSON = ("We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                   "HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid "
                   "JSON. If you have trouble figuring out how to fix this, please contact us through our help "
                   "center at help.openai.com.)")


def _openai_status(code, model, retry_after):
    wait = f"{retry_after}s" if retry_after is not None else "1s"
    table = {
        400: ("Invalid request.", "invalid_request_error", None),
        401: ("Incorrect API key provided: sk-sim***************************************0000. You can find your "
              "API key at https://platform.openai.com/account/api-keys.", "invalid_request_error", "invalid_api_key"),
        403: ("Country, region, or territory not supported", "request_forbidden",
              "unsupported_country_region_territory"),
        404: (f"The model `{model}` does not exist or you do not have access to it.", "invalid_request_error",
              "model_not_found"),
        429: (f"Rate limit reached for {model} in organization org-simulator on requests per min (RPM): "
              f"Limit 500, Used 500, Requested 1. Please try again in {wait}. Visit "
              "https://platform.openai.com/account/rate-limits to learn more.", "requests", "rate_limit_exceeded"),
        500: ("The server had an error processing your request. Sorry about that! You can retry your request, or "
              "contact us through our help center at help.openai.com if you keep seeing this error. (Please "
              "include the request ID req_simulator in your email.)", "server_error", None),
        503: ("The engine is currently overloaded, please try again later", "service_unavailable_error",
              "server_is_overloaded"),
    }
    if code in table:
        return table[code]
    if code >= 500:
        return (f"Upstream error ({code}).", "server_error", None)
    return (f"Request failed with status {code}.", "invalid_request_error", None)


# ---------------------------------------------------------------- Anthropic

def anthropic_error(code, type_, message, headers=None):
    body = orjson.dumps({"type": "error", "error": {"type": type_, "message": message},
                         "request_id": "req_011CSimulator000000000000"})
    return status_line(code), _headers(JSON, headers), body


def _anthropic_status(code, model):
    table = {
        400: ("invalid_request_error", "Invalid request."),
        401: ("authentication_error", "invalid x-api-key"),
        402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
        403: ("permission_error", "Your API key does not have permission to use the specified resource."),
        404: ("not_found_error", f"model: {model}"),
        413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
        429: ("rate_limit_error", "This request would exceed the rate limit for your organization "
              "(00000000-0000-0000-0000-000000000000) of 50 requests per minute. For details, refer to: "
              "https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. "
              "Please reduce the prompt length or the maximum tokens requested, or try again later. You may also "
              "contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit "
              "increase."),
        500: ("api_error", "Internal server error"),
        504: ("timeout_error", "Request timed out"),
        529: ("overloaded_error", "Overloaded"),
    }
    if code in table:
        return table[code]
    return ("api_error", "Internal server error") if code >= 500 else ("invalid_request_error", "Invalid request.")


# ---------------------------------------------------------------- Gemini

def gemini_error(code, status, message, details=None, headers=None):
    err = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return status_line(code), _headers(GEMINI_JSON, headers), gjson({"error": err})


GEMINI_NO_KEY = ("Method doesn't allow unregistered callers (callers without established identity). Please use API "
                 "Key or other form of API consumer identity to call this API.")
GEMINI_OVERLOADED = "The model is overloaded. Please try again later."


def _gemini_status(code, model, retry_after):
    if code == 429:
        details = [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": model}}]},
            {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]},
        ]
        if retry_after is not None:
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after}s"})
        return ("RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.",
                details)
    table = {
        400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
        403: ("PERMISSION_DENIED", "The caller does not have permission"),
        404: ("NOT_FOUND", f"models/{model} is not found for API version v1beta, or is not supported for "
              "generateContent. Call ListModels to see the list of available models and their supported methods."),
        499: ("CANCELLED", "The operation was cancelled."),
        500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
              "https://developers.generativeai.google/guide/troubleshooting"),
        503: ("UNAVAILABLE", GEMINI_OVERLOADED),
        504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    }
    status, message = table.get(code, ("INTERNAL" if code >= 500 else "INVALID_ARGUMENT", f"Error {code}."))
    return status, message, None


# ---------------------------------------------------------------- by fault

def status_error(provider, code, model, params):
    """The error a `status:code=N[,retry_after=S][,should_retry=B]` fault answers with."""
    retry_after = params.get("retry_after")
    extra = []
    if retry_after is not None and provider != "gemini":  # Gemini puts the hint in RetryInfo, not a header
        extra.append(("Retry-After", str(retry_after)))
    if "should_retry" in params:
        extra.append(("x-should-retry", "true" if params["should_retry"] else "false"))
    if provider == "openai":
        message, type_, err_code = _openai_status(code, model, retry_after)
        return openai_error(code, message, type_, None, err_code, extra)
    if provider == "anthropic":
        type_, message = _anthropic_status(code, model)
        return anthropic_error(code, type_, message, extra)
    status, message, details = _gemini_status(code, model, retry_after)
    return gemini_error(code, status, message, details, extra)


def bad_key(provider):
    if provider == "openai":
        return status_error("openai", 401, "", {})
    if provider == "anthropic":
        return anthropic_error(401, "authentication_error", "invalid x-api-key")
    return gemini_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
         "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
        {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
         "message": "API key not valid. Please pass a valid API key."}])


def context_length(provider, prompt_tokens):
    if provider == "openai":
        return openai_error(400, "This model's maximum context length is 128000 tokens. However, your messages "
                            f"resulted in {128000 + prompt_tokens} tokens. Please reduce the length of the messages.",
                            "invalid_request_error", "messages", "context_length_exceeded")
    if provider == "anthropic":
        return anthropic_error(400, "invalid_request_error",
                               f"prompt is too long: {200000 + prompt_tokens} tokens > 200000 maximum")
    return gemini_error(400, "INVALID_ARGUMENT", f"The input token count ({1048576 + prompt_tokens}) exceeds the "
                        "maximum number of tokens allowed (1048576).")


def reject_prefill(provider):
    if provider == "openai":
        return openai_error(400, "This model does not support assistant message prefill. The conversation must "
                            "end with a user message.", "invalid_request_error", "messages", None)
    if provider == "anthropic":
        return anthropic_error(400, "invalid_request_error", "This model does not support assistant message "
                               "prefill. The conversation must end with a user message.")
    return gemini_error(400, "INVALID_ARGUMENT", "Please ensure that the conversation ends with a user turn.")


OPENAI_CONTENT_POLICY = ("Your request was rejected as a result of our safety system. Your prompt may contain text "
                         "that is not allowed by our safety system.")


def content_policy_openai():
    return openai_error(400, OPENAI_CONTENT_POLICY, "invalid_request_error", None, "content_policy_violation")


# ---------------------------------------------------------------- mid-stream error events

STREAM_ERROR_DEFAULT = {"openai": 500, "anthropic": 529, "gemini": 503}


def stream_error_event(provider, code=None):
    """The bytes of a mid-stream error event (HTTP status is already 200)."""
    code = code or STREAM_ERROR_DEFAULT[provider]
    if provider == "openai":
        message, type_, err_code = _openai_status(code, "the model", None)
        body = orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": err_code}})
        return b"data: " + body + b"\n\n"
    if provider == "anthropic":
        type_, message = _anthropic_status(code, "")
        # json.dumps' default separators give the spaces of the SDK's recorded fixture.
        body = json.dumps({"type": "error", "error": {"type": type_, "message": message}})
        return b"event: error\ndata: " + body.encode() + b"\n\n"
    status, message, _ = _gemini_status(code, "the model", None)
    return b"data: " + gjson({"error": {"code": code, "message": message, "status": status}}) + b"\r\n\r\n"


MALFORMED = {
    "openai": b'data: {"id":"chatcmpl-sim","object":"chat.completion.chunk","choices":[{"index":0,"delta":'
              b'{"content":"oops\n\n',
    "anthropic": b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":'
                 b'{"type":"text_delta","text":"oops\n\n',
    "gemini": b'data: {"candidates": [{"content": {"parts": [{"text": "oops\r\n\r\n',
}
