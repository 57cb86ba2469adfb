"""OpenAI Chat Completions ⇄ Anthropic Messages: requests, responses, stream events and errors.

Pure: dicts in, dicts out, no I/O. Wire facts and the mapping choices follow the "Recommended"
columns of shared/reference/provider-wire-formats.md (sections B and D).

Choices:
* System and developer messages, wherever they appear, are joined with "\\n\\n" into one top-level
  `system` string (Anthropic has no system role inside `messages`).
* JSON mode (`response_format` json_schema / json_object) is the forced-tool trick: a tool named
  `json_tool_call` with the requested schema. A json-mode user expects `message.content` to *be* a
  JSON object; a tool input is guaranteed to be one, a system instruction only asks for it.
  Responses unwrap that tool's input into `content` with finish_reason "stop", found by name.
* `temperature` is clamped to Anthropic's maximum 1.0: OpenAI's 1-2 means "more random than the
  default", nearest to Anthropic's 1.0. Rejecting would refuse valid OpenAI requests; rescaling
  (t/2) would change the meaning of common values such as 0.7.
* `temperature` and `top_p` together: `top_p` is dropped. Claude Sonnet 4.5, Haiku 4.5, Opus 4.1 and
  later answer 400 "`temperature` and `top_p` cannot both be specified for this model. Please use only
  one." (BerriAI/litellm#15097, di-sukharev/opencommit#520), and Anthropic's API reference tells callers
  of every model to "either alter temperature or top_p, but not both". So the rule holds for every
  Claude model rather than hanging on a per-model flag each new model row would have to get right: older
  models that accept both (3.x, Sonnet 4) lose only a combination Anthropic advises against, and the
  3.5 rows of the model table name retired models. `temperature` is the one kept, as in the sampling
  example of Anthropic's Claude 4.5 migration guide.

The package is split by direction: `request` (OpenAI → Anthropic), `response` (a whole message → a
`chat.completion`, and the finish-reason and usage mapping the stream shares), `stream` (SSE events →
chunks) and `errors` (Anthropic errors → OpenAI error objects).
"""
from .errors import error_from_anthropic
from .request import JSON_TOOL, to_anthropic, tool_use_id
from .response import FINISH_REASON, from_anthropic
from .stream import AnthropicStream

__all__ = ["FINISH_REASON", "JSON_TOOL", "AnthropicStream", "error_from_anthropic", "from_anthropic",
           "to_anthropic", "tool_use_id"]
