"""OpenAI Chat Completions ⇄ Google Gemini (generativelanguage v1beta), as pure functions.

Conventions (reference sections C and D; where gateways disagree, the choice is said here):
* Tool results: Gemini wants `functionResponse.response` to be a JSON object. A tool message whose text
  parses as a JSON object is sent as that object; anything else (plain text, a list, a number) is
  wrapped as `{"content": "<the text>"}` (LiteLLM's wrapping).
* Thought signatures: Gemini thinking models reject history whose `functionCall` parts lost their
  `thoughtSignature`. OpenAI history has nowhere to keep it but the tool-call id, so the id becomes
  `<call id>__thought__<base64url(signature), unpadded>` (stateless; only `[A-Za-z0-9_-]`, so the id
  is still valid for Anthropic). The format lives in common.py (`tool_call_id_with_signature`,
  `split_tool_call_id`), since every translator cuts it off to send the bare id on.
* Schemas (tool parameters, `json_schema`): Gemini takes an OpenAPI subset (`responseSchema`, not
  `responseJsonSchema`, which older models lack), see `gateway.translate.schema`.
* Usage: prompt = promptTokenCount (cached included), completion = candidates + thoughts,
  cached = cachedContentTokenCount, reasoning = thoughtsTokenCount; total = prompt + completion.
* A missing finishReason is treated like STOP: `tool_calls` when the candidate called a function.

The package is split by direction: `request` (OpenAI → Gemini), `response` (a generateContent response
→ a `chat.completion`, and the finish-reason and usage mapping the stream shares), `stream` (SSE events
→ chunks) and `errors` (Google RPC errors → OpenAI error objects).
"""
# The tool-call id format lives in common.py; its names stay importable from here, as before the split.
from gateway.translate.common import split_tool_call_id, tool_call_id_with_signature

from .errors import ERROR_TYPES, PROVIDER_KEY_REASONS, UPSTREAM_AUTH_CODE, error_from_gemini
from .request import DEFAULT_IMAGE_MIME, GENERATION_CONFIG, MIME_BY_EXTENSION, TOOL_CHOICE_MODES, to_gemini
from .response import FINISH_REASON_MAP, finish_reason, from_gemini
from .stream import GeminiStream

__all__ = ["DEFAULT_IMAGE_MIME", "ERROR_TYPES", "FINISH_REASON_MAP", "GENERATION_CONFIG", "MIME_BY_EXTENSION",
           "PROVIDER_KEY_REASONS", "TOOL_CHOICE_MODES", "UPSTREAM_AUTH_CODE", "GeminiStream", "error_from_gemini",
           "finish_reason", "from_gemini", "split_tool_call_id", "to_gemini", "tool_call_id_with_signature"]
