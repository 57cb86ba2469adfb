"""Provider simulator: the OpenAI, Anthropic and Gemini wire formats, locally, with faults on demand.

    make_app(options) -> WSGI app          serve(host, port, options, ready)  (blocks)
    main(argv)        -> the CLI           spawn_process(args) -> (Popen, base_url)

Endpoints (any path prefix works: matching is on the path's end):
    POST .../chat/completions   GET .../models                      (OpenAI, Bearer auth)
    POST .../messages           GET .../models + anthropic headers  (Anthropic, x-api-key + anthropic-version)
    POST .../models/{m}:generateContent | :streamGenerateContent[?alt=sse]
    GET  .../v1beta/models                                           (Gemini, x-goog-api-key or ?key=)

Replies are deterministic per conversation; a tool call answers with an example of the tool's schema, and
JSON mode (OpenAI `response_format` json_object / json_schema, Gemini `responseMimeType`
application/json) with a JSON object: the schema's example, else `{"answer": <the words>}`.

Faults: `kind[:param=value,...]`, several joined by `;`, from the `X-Sim-Fault` header, else the first
matching control-API rule, else `--fault`. Kinds: none, status:code=N[,retry_after=S][,should_retry=B],
hang, reset, slow_first:ms=N, cut:after=N, stall:after=N[,ms=M], malformed:after=N, no_done,
error_event:after=N[,code=C], context_length, content_policy, reject_prefill, bad_key.
`after=N` counts content events (text deltas / argument fragments) already sent.

Control API: POST/GET/DELETE /_sim/rules, GET /_sim/stats, POST /_sim/reset,
GET /_sim/last?provider=P[&model=M], GET /_sim/health.
"""
from .app import make_app
from .options import SimOptions
from .server import main, serve, spawn_process

__all__ = ["SimOptions", "make_app", "main", "serve", "spawn_process"]
