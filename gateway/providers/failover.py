"""The failover manager: owns retries, fallbacks, circuit breakers and the request deadline.

It walks a chain of equivalent models (the requested one first), skipping providers with no key and
models whose breaker is open, and decides per failure:
- 429: wait a short Retry-After (capped, inside the deadline) and retry once; otherwise fail over at once.
- 5xx (529 included), refused or reset before any byte, a body that is not JSON: one quick jittered
  retry, then fail over.
- no answer (read timeout) or no first token: fail over at once; a silent route is never retried.
- 400/404/413/422: the client's request is wrong; returned at once. A context-length error goes to the
  model's context-length chain when one is configured. A content-policy rejection is returned as is.
- a fallback the gateway itself cannot put the request to (its translation refuses it: n > 1 to Claude, an
  audio part): passed over as "incompatible", never called. The request is valid for the model the client
  asked for; only that model's own refusal is the client's 400.
- 401/403 from the upstream (our key is wrong): fail over, logged loudly.
"""
import dataclasses
import logging
import random
import time

from gateway.providers import fetch, transport
from gateway.providers.breaker import OPEN
from gateway.providers.resume import ResilientStream
from gateway.translate.common import UpstreamError, error_object

log = logging.getLogger("gateway")

CLIENT_ERRORS = {400, 404, 413, 422}
RETRY_ONCE = {"connect", "malformed", "http5xx"}
FINAL = ("client_error", "context_length", "content_policy")  # the request's own fault: returned, never retried
MAX_ATTEMPTS = 8   # per request, over the whole chain: a persistent failure stays bounded


@dataclasses.dataclass
class Outcome:
    requested: str                  # the model name the client asked for
    original_provider: str
    model: object = None            # the registry Model that answered
    provider: str | None = None
    attempts: list = dataclasses.field(default_factory=list)  # failed attempts, in order
    skipped: list = dataclasses.field(default_factory=list)   # chain members not asked, and why
    inlined: tuple | None = None    # (request, the request with its images downloaded), made once

    def skip(self, model, reason, message=None):
        entry = {"provider": model.provider, "model": model.name, "reason": reason}
        if message is not None:
            entry["message"] = message[:300]
        self.skipped.append(entry)

    @property
    def failover_used(self):
        """Another model than the one asked for answered."""
        return self.model is not None and self.model.name != self.requested

    @property
    def tried_another(self):
        """Another model than the one asked for answered or was asked (and failed too)."""
        return self.failover_used or any(a["model"] != self.requested for a in self.attempts)

    def failed(self, model, err):
        self.attempts.append({"provider": model.provider, "model": model.name, "status": err.upstream_status,
                              "reason": kind(err), "message": (err.error.get("message") or "")[:300]})


def kind(err):
    """One word for what went wrong: the transport reason, or the class of HTTP status."""
    if err.reason:
        return err.reason
    status = err.upstream_status or err.status
    if status == 429:
        return "rate_limited"
    if status and status >= 500:
        return "http5xx"
    if (err.error.get("code") or "") == "context_length_exceeded":
        return "context_length"
    if (err.error.get("code") or "") in ("content_filter", "content_policy_violation"):
        return "content_policy"
    return "client_error"


class Manager:
    def __init__(self, settings, registry, providers, sessions, breakers, sleep=time.sleep):
        self.settings = settings
        self.registry = registry
        self.providers = providers      # name -> Provider
        self.sessions = sessions        # name -> requests.Session
        self.breakers = breakers
        self.sleep = sleep

    def chain(self, model, override=None, enabled=True):
        """The models to try, in order: the requested one, then its fallbacks (or the header's)."""
        models = [model]
        if not enabled:
            return models
        for name in (override if override is not None else model.fallbacks):
            m = self.registry.resolve(name)
            if m is None:
                if override is not None:
                    raise UpstreamError(400, error_object(f"Unknown fallback model '{name}' in X-Gateway-Fallbacks.",
                                                          "invalid_request_error", "X-Gateway-Fallbacks",
                                                          "model_not_found"))
                continue
            if m not in models:
                models.append(m)
        return models

    def _usable(self, models):
        """(the models to walk, whether to walk them whatever their breakers say)."""
        configured = [m for m in models if self.providers[m.provider].configured]
        # Only a look (status() claims nothing): a half-open model's one probe slot is claimed in _walk,
        # when the model is really about to be asked. Claiming it here for the whole chain left a
        # fallback "probing" for ever whenever an earlier model answered, so it was never asked again.
        allowed = [m for m in configured if self.breakers.status(m.name) != OPEN]
        # Every breaker open: still try the chain rather than refuse; the first to recover answers.
        return (allowed, False) if allowed else (configured, True)

    def run(self, request, model, id_, created, stream, fallbacks=None, failover=True, deadline=None):
        """(result, Outcome): a completion dict, or an open UpstreamStream for `stream=True`.
        `deadline` (time.monotonic) bounds every attempt; by default GATEWAY_DEADLINE from now."""
        deadline = deadline or time.monotonic() + self.settings.deadline
        outcome = Outcome(model.name, model.provider)
        chain = self.chain(model, fallbacks, failover)
        candidates, forced = self._usable(chain)
        for m in chain:
            if m not in candidates:
                outcome.skip(m, "breaker_open" if self.providers[m.provider].configured else "no_key")
        if not candidates:
            raise UpstreamError(503, error_object(
                f"No provider is configured for model '{model.name}' or its fallbacks: set "
                f"{model.provider.upper()}_API_KEY.", "server_error", None, "provider_not_configured"))
        try:
            result = self._walk(request, candidates, id_, created, stream, deadline, outcome, failover, forced)
        except UpstreamError as err:
            err.outcome = outcome  # what was tried, for the response headers and the log row
            raise
        if stream:
            resumable = chain if failover else [outcome.model]
            result = ResilientStream(self, request, result, outcome, resumable, id_, created, deadline)
        return result, outcome

    def _walk(self, request, candidates, id_, created, stream, deadline, outcome, failover, forced=False):
        last = None
        queue, skipped = list(candidates), []
        while queue:
            if time.monotonic() >= deadline:
                break   # nothing left to spend: a 504 naming what was tried, not one more attempt
            m = queue.pop(0)
            fallback = m.name != outcome.requested
            refusal = self._refusal(request, m, stream, deadline, outcome) if fallback else None
            if refusal is not None:
                # Not an attempt: no call was made, so no breaker failure, no upstream-error metric, and an
                # error answer is not attributed to this model (X-Model names the last model really asked).
                outcome.skip(m, "incompatible", refusal.error.get("message") or "")
                if not queue and not outcome.attempts and not forced:
                    queue, forced = skipped, True  # only a half-open model is left: ask it after all
                continue
            if not forced and not self.breakers.allow(m.name):
                skipped.append(m)  # half-open, and another request is its probe
                outcome.skip(m, "breaker_probing")
                if not queue and not outcome.attempts:
                    queue, forced = skipped, True  # nothing else to ask: as when every breaker is open
                continue
            try:
                result = self._try_model(request, m, id_, created, stream, deadline, outcome)
            except UpstreamError as err:
                last = err
                what = kind(err)
                if what == "context_length" and failover and m.context_fallbacks and \
                        time.monotonic() < deadline and len(outcome.attempts) < MAX_ATTEMPTS:
                    # Each model at most once: a cycle of context chains (A -> B -> A) must end.
                    asked = {a["model"] for a in outcome.attempts}
                    queue = [x for x in self.chain(m, list(m.context_fallbacks))
                             if x.name not in asked and self.providers[x.provider].configured]
                    if queue:
                        continue
                if what in FINAL:
                    err.provider = m.provider
                    raise
                if time.monotonic() >= deadline or len(outcome.attempts) >= MAX_ATTEMPTS:
                    break
                continue
            outcome.model, outcome.provider = m, m.provider
            return result
        err = self._exhausted(last, outcome, deadline)
        err.provider = outcome.attempts[-1]["provider"] if outcome.attempts else None
        raise err

    def _refusal(self, request, model, stream, deadline, outcome):
        """The gateway's own refusal to put `request` to a fallback `model` (an UpstreamError), or None.

        Found by preparing the request as the attempt will (images downloaded for a provider that needs
        them, memoized on `outcome`, then translated), so the translators stay the one source of truth for
        what a wire format can express; the capabilities in the model table do not cover n, audio or
        file parts, and would have to repeat the translators' rules to. Done for fallbacks only, so the
        extra translation costs nothing until a failover: the requested model's refusal stays final.
        A translator bug (any other exception) is raised as from the attempt itself."""
        provider = self.providers[model.provider]
        try:
            if provider.inlines_images:
                request = self._with_inline_images(request, self.sessions[model.provider], deadline, outcome)
            provider.prepare(request, model, stream)
        except UpstreamError as err:
            return err
        return None

    def _try_model(self, request, model, id_, created, stream, deadline, outcome):
        """One model: the first attempt, and at most one retry when the failure deserves one."""
        for attempt in (1, 2):
            try:
                result = self.attempt(request, model, id_, created, stream, deadline, outcome)
            except UpstreamError as err:
                err = self.own_view(err, model)
                outcome.failed(model, err)
                what = kind(err)
                self.count_failure(model, err)
                if what in FINAL:
                    raise err from None
                wait = self._retry_wait(what, err, attempt, deadline)
                # A failure that opens the breaker ends this model's turn: the retry would go to a model
                # just declared down, and a failed half-open probe would get a second go.
                if wait is None or self.breakers.status(model.name) == OPEN:
                    raise err from None
                self.sleep(wait)
                continue
            except Exception:
                # Not an upstream failure but ours (a translator bug): free a half-open probe slot so the
                # model is not skipped for ever, and let the app answer 500 with the request id.
                self.breakers.release(model.name)
                raise
            self.breakers.success(model.name)
            return result
        raise AssertionError("unreachable")

    def _retry_wait(self, what, err, attempt, deadline):
        """Seconds to wait before retrying the same model, or None to move on."""
        if attempt > 1:
            return None
        left = deadline - time.monotonic()
        if what == "rate_limited":
            ra = err.retry_after
            if ra is not None and 0 <= ra <= self.settings.retry_after_cap and ra < left:
                return ra
            return None
        if what in RETRY_ONCE:
            wait = self.settings.retry_backoff * (0.5 + random.random())
            return wait if wait < left else None
        return None

    def count_failure(self, model, err):
        """A failure counts toward the model's breaker unless the request itself was at fault; then the
        model did answer, so a probe it was is over (its slot freed), neither failed nor proven."""
        if kind(err) in FINAL:
            self.breakers.release(model.name)
        else:
            self.breakers.failure(model.name)

    def attempt(self, request, model, id_, created, stream, deadline, outcome=None):
        provider = self.providers[model.provider]
        session = self.sessions[model.provider]
        if provider.inlines_images:
            request = self._with_inline_images(request, session, deadline, outcome)
        left = max(0.05, deadline - time.monotonic())
        connect = min(self.settings.connect_timeout, left)
        # The socket timeouts bound each wait for a byte; the last argument bounds the whole call, so an upstream
        # trickling bytes cannot hold the request past its first-token timeout or its deadline.
        if stream:
            first = min(model.first_token_timeout or self.settings.first_token_timeout, left)
            read = model.read_timeout or self.settings.read_timeout   # between events
            return transport.open_stream(session, provider, request, model, id_, created, (connect, first), read,
                                         first)
        # A non-streamed answer sends nothing until it is generated: GATEWAY_READ_TIMEOUT (120 s) cut a long one
        # off and paid for it again on the fallback.
        read = model.read_timeout or self.settings.answer_timeout
        return transport.complete(session, provider, request, model, id_, created, (connect, min(read, left)), left)

    def _with_inline_images(self, request, session, deadline, outcome):
        """The request with remote images downloaded, once per request whatever the attempts."""
        memo = outcome.inlined if outcome is not None else None
        if memo is not None and memo[0] is request:
            return memo[1]
        inlined = fetch.inline_images(request, session, self.settings.fetch_private_urls, deadline)
        if outcome is not None:
            outcome.inlined = (request, inlined)
        return inlined

    def own_view(self, err, model):
        """What the client may see of an upstream failure: never our provider keys, and never our
        credential problem dressed up as theirs."""
        secrets = [p.spec.api_key for p in self.providers.values() if p.spec.api_key]
        for field in ("message", "type", "param", "code"):  # an upstream fills each as it likes
            value = err.error.get(field)
            if isinstance(value, str):
                for secret in secrets:
                    value = value.replace(secret, "***")
                err.error[field] = value
        if err.reason == "auth" or (err.reason is None and err.upstream_status in (401, 403)):
            log.error("PROVIDER CREDENTIALS REJECTED: %s answered %s for %s; check the gateway's key for it",
                      model.provider, err.upstream_status, model.name)
            return UpstreamError(502, error_object(
                f"The gateway's credentials for {model.provider} were rejected (HTTP {err.upstream_status}); "
                "the operator has been alerted.", "upstream_error", None, "upstream_auth_failed"),
                upstream_status=err.upstream_status, reason="auth")
        if err.reason == "account":
            log.error("PROVIDER ACCOUNT REFUSED: %s answered %s for %s (%s); check the gateway's account there "
                      "(credit, billing, region)", model.provider, err.upstream_status, model.name,
                      err.error.get("message"))
            return UpstreamError(502, error_object(
                f"The gateway's account with {model.provider} cannot be used (HTTP {err.upstream_status}: out of "
                "credit, billing or region); the operator has been alerted.", "upstream_error", None,
                "upstream_account_refused"), upstream_status=err.upstream_status, reason="account")
        return err

    def _exhausted(self, last, outcome, deadline):
        unable = ", ".join(f"{s['provider']}/{s['model']} ({s['message']})" for s in outcome.skipped
                           if s["reason"] == "incompatible")
        unable = f" Fallbacks that cannot take this request: {unable}." if unable else ""
        if last is not None and len({a["model"] for a in outcome.attempts}) == 1 and \
                time.monotonic() < deadline:
            # One model tried (perhaps twice): its own error says the most, with why no fallback answered.
            if unable:
                last.error = {**last.error, "message": (last.error.get("message") or "").rstrip() + unable}
            return last
        tried = ", ".join(f"{a['provider']}/{a['model']} ({a['reason']})" for a in outcome.attempts)
        timed_out = time.monotonic() >= deadline
        if timed_out:
            status, code = 504, "deadline_exceeded"
        elif all(a["reason"] in ("rate_limited", "http5xx") and a["status"] in (429, 503, 529)
                 for a in outcome.attempts):
            status, code = 503, "all_providers_unavailable"
        else:
            status, code = 502, "all_providers_failed"
        message = f"Every provider failed for this request. Tried: {tried or 'none'}.{unable}"
        if last is not None:
            message += f" Last error: {last.error.get('message')}"
        err = UpstreamError(status, error_object(message, "upstream_error", None, code))
        if last is not None and status == 503 and last.retry_after:
            err.retry_after = last.retry_after
        return err
