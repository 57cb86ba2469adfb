"""One registry: which provider serves a model, what the model can do, and its preset failover chain.

The table is data (`gateway/data/models.toml`), extended and overridden by the GATEWAY_CONFIG file:
adding a model is a data change, not code.
"""
import dataclasses
import re
from decimal import Decimal, InvalidOperation
import tomllib
from importlib import resources

from gateway.config import ConfigError

BUILTIN_PROVIDERS = ("openai", "anthropic", "gemini")
KINDS = {"openai", "anthropic", "gemini"}
_CREATED = 1700000000  # a fixed `created` for /v1/models: the table has no release dates
# The model ids a client may name as `provider/<id>` for a model the table lacks. The id is sent upstream: in the
# JSON body for OpenAI-compatible servers and Anthropic (printable ASCII, no spaces: it also goes back in the
# X-Model header, which cannot carry line breaks or non-Latin-1 text), and in the URL's path for Gemini, where
# "gemini/../../upload/v1beta/files?" would have sent the gateway's Gemini key to another API method.
_UPSTREAM_ID = {"gemini": re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"), None: re.compile(r"[!-~]{1,256}")}


@dataclasses.dataclass(frozen=True)
class ProviderSpec:
    name: str
    kind: str            # which wire format: openai, anthropic or gemini
    base_url: str
    api_key: str | None = dataclasses.field(repr=False, default=None)
    prefill: bool = False


@dataclasses.dataclass(frozen=True)
class Model:
    name: str
    provider: str
    upstream: str
    context_window: int | None = None
    max_output_tokens: int | None = None
    default_max_tokens: int | None = None
    capabilities: frozenset = frozenset()
    fallbacks: tuple = ()
    context_fallbacks: tuple = ()
    read_timeout: float | None = None
    first_token_timeout: float | None = None
    price: tuple | None = None       # (input, output) USD per 1M tokens from the config file, if given

    def can(self, capability):
        return capability in self.capabilities


def _package_table():
    return tomllib.loads(resources.files("gateway.data").joinpath("models.toml").read_text("utf-8"))


def _model(name, row, defaults):
    provider = row.get("provider")
    if not provider:
        raise ConfigError(f"model {name!r} in the model table has no provider")
    caps = row.get("capabilities", defaults.get(provider, {}).get("capabilities", []))
    return Model(
        name=name, provider=provider, upstream=row.get("upstream", name),
        context_window=row.get("context_window"), max_output_tokens=row.get("max_output_tokens"),
        default_max_tokens=row.get("default_max_tokens"), capabilities=frozenset(caps),
        fallbacks=tuple(row.get("fallbacks", ())), context_fallbacks=tuple(row.get("context_fallbacks", ())),
        read_timeout=row.get("read_timeout"), first_token_timeout=row.get("first_token_timeout"),
        price=_price(name, row))


def _price(name, row):
    if "input_price" not in row and "output_price" not in row:
        return None
    try:
        return (Decimal(str(row["input_price"])), Decimal(str(row["output_price"])))
    except (KeyError, InvalidOperation):
        raise ConfigError(f"model {name!r}: input_price and output_price must both be numbers") from None


class Registry:
    def __init__(self, settings):
        table = _package_table()
        extra = settings.file_config
        defaults = dict(table.get("defaults", {}))
        self.providers = {
            name: ProviderSpec(name, name, settings.base_urls[name], settings.provider_key(name),
                               prefill="prefill" in defaults.get(name, {}).get("capabilities", ()))
            for name in BUILTIN_PROVIDERS
        }
        for name, row in (extra.get("providers") or {}).items():
            if not isinstance(row, dict) or not row.get("base_url"):
                raise ConfigError(f"GATEWAY_CONFIG: provider {name!r} needs a base_url")
            kind = row.get("kind", "openai")
            if kind not in KINDS:
                raise ConfigError(f"GATEWAY_CONFIG: provider {name!r} has unknown kind {kind!r}")
            self.providers[name] = ProviderSpec(
                name, kind, row["base_url"].rstrip("/"), settings.secret_env.get(name),
                prefill=bool(row.get("prefill", False)))
            caps = ["tools", "json"] + (["prefill"] if row.get("prefill") else [])
            defaults.setdefault(name, {"capabilities": row.get("capabilities", caps)})
        rows = dict(table.get("models", {}))
        for name, row in (extra.get("models") or {}).items():
            rows[name] = {**rows.get(name, {}), **row}
        self.models = {name: _model(name, row, defaults) for name, row in rows.items()}
        for m in self.models.values():
            if m.provider not in self.providers:
                raise ConfigError(f"model {m.name!r} names unknown provider {m.provider!r}")

    def resolve(self, name):
        """The Model for a requested name, or None. `provider/model` routes a model the table lacks."""
        model = self.models.get(name)
        if model is not None:
            return model
        provider, sep, rest = name.partition("/")
        if sep and rest and provider in self.providers and self._routable(provider, rest):
            known = self.models.get(rest)
            if known is not None and known.provider == provider:
                return known
            caps = ("tools", "images", "json") + (("prefill",) if self.providers[provider].prefill else ())
            return Model(name=name, provider=provider, upstream=rest, capabilities=frozenset(caps))
        return None

    def _routable(self, provider, upstream_id):
        pattern = _UPSTREAM_ID.get(self.providers[provider].kind) or _UPSTREAM_ID[None]
        return pattern.fullmatch(upstream_id) is not None

    def listed(self):
        return [self.listed_entry(m) for m in self.models.values()]

    @staticmethod
    def listed_entry(model):
        return {"id": model.name, "object": "model", "created": _CREATED, "owned_by": model.provider}
