"""Mid-stream recovery: when a stream stalls or is cut after bytes were sent, continue the answer.

The continuation goes first to the same model (it counts as that model's retry), then to the next
models of the chain, as the original messages plus the partial answer as a final assistant message
(a prefill), so the client receives one whole answer with no text repeated or lost. Only models that
can continue a prefill are asked. When none can, the stream ends with an error event naming the
original failure, never with a clean finish.
"""
import logging
import math

from gateway.translate.common import UpstreamError

log = logging.getLogger("gateway")
_LIMITS = ("max_completion_tokens", "max_tokens")


def continuation_request(request, partial, spent=0):
    """The request a continuation sends: the partial answer as a prefill, and the client's token limit less the
    `spent` tokens already streamed (the limit is the whole answer's, not each attempt's)."""
    body = dict(request)
    if partial:
        body["messages"] = list(request["messages"]) + [{"role": "assistant", "content": partial.rstrip()}]
    for field in _LIMITS:
        if isinstance(body.get(field), int):
            body[field] = body[field] - spent
    return body


def left_to_write(request, spent):
    """Tokens the client's limit still allows after `spent`, or None when it set none."""
    limits = [request[f] for f in _LIMITS if isinstance(request.get(f), int)]
    return min(limits) - spent if limits else None


def tokens_spent(chars, deltas, usage):
    """Completion tokens streamed in `deltas` content deltas of `chars` characters: what the upstream counted when
    it said (Anthropic and Gemini count as they go), else the larger of the deltas (OpenAI sends about a token
    each) and the characters / 4, so that a continuation errs towards stopping short of the limit, never past."""
    counted = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return max(counted if isinstance(counted, int) else 0, deltas, math.ceil(chars / 4))


class ResilientStream:
    def __init__(self, manager, request, upstream, outcome, chain, id_, created, deadline):
        self.manager = manager
        self.request = request
        self.upstream = upstream
        self.outcome = outcome
        self.chain = chain          # the models of the request's chain, in order
        self.id = id_
        self.created = created
        self.deadline = deadline
        self.state = upstream.state
        self.text = []
        self.deltas = 0             # content deltas sent, over every attempt
        self.earlier = []           # (model, usage) of each attempt given up on; see _give_up
        self._attempt = [0, 0]      # this attempt's content deltas and characters
        self.tool_calls_sent = False
        self.still_wanted = lambda: True   # the handler's: False once the client has gone (no call for nobody)
        self.resumed_on = []        # models asked to continue, in order
        self._trim_pending = False
        # The id and created the client saw on the first chunk. An OpenAI stream relays the upstream's
        # own id, not ours, so a continuation must adopt whatever was actually sent, not `self.id`.
        self.sent_id, self.sent_created = None, None
        self._malformed_before = 0  # malformed events skipped on upstreams given up on

    @property
    def malformed(self):
        return self._malformed_before + self.upstream.malformed

    def __iter__(self):
        stream, skip_role = self.upstream, False
        original = None
        while True:
            try:
                for chunk in stream:
                    chunk = self._track(chunk, skip_role)
                    if chunk is not None:
                        yield chunk
                return
            except UpstreamError as err:
                failed = self.outcome.model
                err = self.manager.own_view(err, failed)   # never a provider key in the event or the row
                original = original or err
                self.outcome.failed(failed, err)
                self.manager.count_failure(failed, err)
                log.warning("stream from %s broke (%s) after %d characters; trying to continue",
                            failed.name, err.reason or err.status, sum(map(len, self.text)))
                self._give_up(failed)
                spent = tokens_spent(sum(map(len, self.text)), self.deltas, self.state.usage)
                left = left_to_write(self.request, spent)
                if left is not None and left <= 0 and any(self.text) and not self.tool_calls_sent:
                    # The client's limit is reached: the answer ends as it would have, at its length.
                    yield self._finish("length")
                    return
                stream = None if self.tool_calls_sent or self._json_sent() else self._continue(failed, spent)
                if stream is None:
                    raise UpstreamError(original.status, original.error, reason=original.reason) from None
                self._malformed_before += self.upstream.malformed
                self.upstream, skip_role = stream, True

    def _json_sent(self):
        """Whether part of a JSON-mode answer has reached the client. No model continues one from a prefill: a
        forced JSON tool (Claude) or a constrained decoder (OpenAI-compatible servers) starts a new object, so
        the client would get the start of one object and a whole other after it, as a clean finish."""
        kind = (self.request.get("response_format") or {}).get("type")
        return kind in ("json_object", "json_schema") and any(self.text)

    def _track(self, chunk, skip_role):
        if self.sent_id is None:
            self.sent_id, self.sent_created = chunk.get("id", self.id), chunk.get("created", self.created)
        elif self.resumed_on and chunk.get("id") != self.sent_id:
            chunk = {**chunk, "id": self.sent_id, "created": self.sent_created}
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if skip_role and "role" in delta:
                delta = {k: v for k, v in delta.items() if k != "role"}
                if not delta.get("content") and not delta.get("tool_calls") and not choice.get("finish_reason"):
                    return None
                choice = {**choice, "delta": delta}
                chunk = {**chunk, "choices": [choice]}
            if delta.get("content"):
                self.deltas += 1
                self._attempt[0] += 1
                content = delta["content"]
                if self._needs_space_trim(content):
                    content = content.lstrip()
                    chunk = {**chunk, "choices": [{**choice, "delta": {**delta, "content": content}}]}
                    if not content:
                        return None
                self.text.append(content)
                self._attempt[1] += len(content)
            if delta.get("tool_calls"):
                self.tool_calls_sent = True
        return chunk

    def _needs_space_trim(self, content):
        """The prefill was sent without its trailing white space (Anthropic rejects it); the client
        already has that white space, so the continuation must not repeat it."""
        if not self._trim_pending:
            return False
        self._trim_pending = False
        sent = "".join(self.text)
        return sent != sent.rstrip() and content[:1].isspace()

    def _candidates(self, failed):
        """The failed model once more (its retry), then the models after it in the chain."""
        names = [m.name for m in self.chain]
        after = self.chain[names.index(failed.name) + 1:] if failed.name in names else []
        partial = "".join(self.text)
        return [m for m in [failed] + after
                if m.name not in self.resumed_on and self.manager.providers[m.provider].configured
                and (not partial or m.can("prefill"))]

    def _give_up(self, model):
        """Note what the attempt given up on was billed for, so the answer's usage and cost count every attempt,
        not only the last: its own counts where its upstream gave them (Anthropic and Gemini count as they go),
        else the completion estimated by `tokens_spent` and the prompt left for the handler to estimate."""
        usage = self.state.usage if isinstance(self.state.usage, dict) else {}
        deltas, chars = self._attempt
        prompt = usage.get("prompt_tokens")
        self.earlier.append((model, {
            "prompt_tokens": prompt if isinstance(prompt, int) and prompt > 0 else None,
            "completion_tokens": tokens_spent(chars, deltas, usage)}))
        self._attempt = [0, 0]

    def _finish(self, reason):
        return {"id": self.sent_id or self.id, "object": "chat.completion.chunk", "created": self.sent_created or
                self.created, "model": self.outcome.model.name,
                "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}]}

    def _continue(self, failed, spent=0):
        body = continuation_request(self.request, "".join(self.text), spent)
        for model in self._candidates(failed):
            if not self.still_wanted():
                log.info("client gone: not continuing its stream on %s", model.name)
                return None
            self.resumed_on.append(model.name)
            try:
                stream = self.manager.attempt(body, model, self.id, self.created, True, self.deadline, self.outcome)
            except UpstreamError as err:
                err = self.manager.own_view(err, model)
                self.outcome.failed(model, err)
                self.outcome.attempts[-1]["resumed"] = True
                # A model that cannot take the prefill (a 400) is not down: not a breaker failure.
                self.manager.count_failure(model, err)
                continue
            self.outcome.model, self.outcome.provider = model, model.provider
            self._trim_pending = True
            self.state = _Restamped(stream.state, self)
            return stream
        return None

    def close(self):
        self.upstream.close()


class _Restamped:
    """A continuation's stream state whose usage chunk carries the id the client already has
    (the handler sends that chunk itself, past `_track`)."""

    def __init__(self, state, stream):
        self._state, self._stream = state, stream

    def __getattr__(self, name):
        return getattr(self._state, name)

    def usage_chunk(self):
        chunk = self._state.usage_chunk()
        if chunk is not None and self._stream.sent_id is not None:
            chunk = {**chunk, "id": self._stream.sent_id, "created": self._stream.sent_created}
        return chunk
