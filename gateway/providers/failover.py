"""The failover manager: owns retries, fallbacks and the request deadline.

It walks a chain of equivalent models (the requested one first), skipping providers with no key,
and decides per failure whether to retry, fail over, or return the error to the client.
"""
import dataclasses
import logging
import random
import time

from gateway.translate.common import UpstreamError, error_object
from gateway.providers import transport

log = logging.getLogger("gateway")

CLIENT_ERRORS = {400, 404, 413, 422}


@dataclasses.dataclass
class Outcome:
    requested: str                  # the model name the client asked for
    original_provider: str
    model: object = None            # the registry Model that answered
    provider: str | None = None
    attempts: list = dataclasses.field(default_factory=list)  # failed attempts, in order

    @property
    def failover_used(self):
        return self.model is not None and self.model.name != self.requested


def _is_context_length(err):
    return (err.error.get("code") or "") == "context_length_exceeded"


def _is_content_policy(err):
    return (err.error.get("code") or "") in ("content_filter", "content_policy_violation")


class Manager:
    def __init__(self, settings, registry, providers, sessions):
        self.settings = settings
        self.registry = registry
        self.providers = providers      # name -> Provider
        self.sessions = sessions        # name -> requests.Session

    def chain(self, model, override=None, enabled=True):
        """The models to try, in order: the requested one, then its fallbacks."""
        names = [model.name] + list(override if override is not None else model.fallbacks)
        models = [model]
        if enabled:
            for name in names[1:]:
                m = self.registry.resolve(name)
                if m is not None and m not in models:
                    models.append(m)
        return models

    def _timeouts(self, model, deadline, stream):
        left = max(0.05, deadline - time.monotonic())
        read = model.read_timeout or self.settings.read_timeout
        first = model.first_token_timeout or self.settings.first_token_timeout
        connect = min(self.settings.connect_timeout, left)
        if stream:
            return (connect, min(first, left)), read
        return (connect, min(read, left)), read

    def run(self, request, model, id_, created, stream, fallbacks=None, failover=True):
        """(result, Outcome): a completion dict, or an open UpstreamStream for `stream=True`."""
        deadline = time.monotonic() + self.settings.deadline
        outcome = Outcome(model.name, model.provider)
        candidates = [m for m in self.chain(model, fallbacks, failover)
                      if self.providers[m.provider].configured]
        if not candidates:
            raise UpstreamError(503, error_object(
                f"No provider is configured for model '{model.name}' or its fallbacks: set "
                f"{model.provider.upper()}_API_KEY.", "server_error", None, "provider_not_configured"))
        last = None
        for m in candidates:
            if time.monotonic() >= deadline:
                break
            try:
                result = self._attempt(request, m, id_, created, stream, deadline)
            except UpstreamError as err:
                err = self._own_view(err, m)
                last = err
                outcome.attempts.append({"provider": m.provider, "model": m.name,
                                         "status": err.upstream_status, "reason": err.reason or "http"})
                if self._final(err):
                    err.provider = m.provider
                    raise
                continue
            outcome.model, outcome.provider = m, m.provider
            return result, outcome
        err = self._exhausted(last, outcome, deadline)
        err.provider = outcome.attempts[-1]["provider"] if outcome.attempts else None
        raise err

    def _own_view(self, err, model):
        """What the client may see of an upstream failure: never our provider keys, and never our
        credential problem dressed up as theirs."""
        secrets = [p.spec.api_key for p in self.providers.values() if p.spec.api_key]
        for field in ("message", "param"):
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
        return err

    def _final(self, err):
        """A failure the client must see now: its request is wrong, and another model would say so too."""
        if err.reason is not None:
            return False
        if err.upstream_status in CLIENT_ERRORS and not _is_context_length(err):
            return True
        return _is_content_policy(err)

    def _attempt(self, request, model, id_, created, stream, deadline):
        provider = self.providers[model.provider]
        session = self.sessions[model.provider]
        timeout, read = self._timeouts(model, deadline, stream)
        if stream:
            return transport.open_stream(session, provider, request, model, id_, created, timeout, read)
        return transport.complete(session, provider, request, model, id_, created, timeout)

    def _exhausted(self, last, outcome, deadline):
        if last is not None and len(outcome.attempts) == 1:
            return last
        tried = ", ".join(f"{a['provider']}/{a['model']} ({a['reason'] if a['reason'] != 'http' else a['status']})"
                          for a in outcome.attempts)
        timed_out = time.monotonic() >= deadline
        status = 504 if timed_out else 502
        message = f"Every provider failed for this request. Tried: {tried or 'none'}."
        if last is not None:
            message += f" Last error: {last.error.get('message')}"
        return UpstreamError(status, error_object(message, "upstream_error", None,
                                                  "deadline_exceeded" if timed_out else "all_providers_failed"))


def jittered(base):
    return base * (0.5 + random.random())
