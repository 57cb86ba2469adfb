"""The model table: routing, aliases, explicit provider/model, and OpenAI-compatible servers from config."""
import json

import pytest
import responses

from gateway import config
from gateway.config import ConfigError
from gateway.providers.registry import Registry

ISSUE_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "gpt-4.1", "gpt-4.1-mini",
                "gpt-4.1-nano", "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5",
                "claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929", "claude-opus-4-5-20251101",
                "claude-3-5-sonnet", "claude-3-5-haiku", "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash"]


def registry(**env):
    return Registry(config.load(env))


@pytest.mark.parametrize("name", ISSUE_MODELS)
def test_every_model_routes_to_its_provider(name):
    m = registry().resolve(name)
    assert m is not None
    assert m.provider == {"gpt": "openai", "cla": "anthropic", "gem": "gemini"}[name[:3]]


def test_preset_chains_from_the_issue():
    r = registry()
    assert r.resolve("gpt-4o").fallbacks == ("claude-sonnet-4-5-20250929", "gemini-2.5-pro")
    assert r.resolve("gpt-4o-mini").fallbacks == ("claude-haiku-4-5-20251001", "gemini-2.5-flash")
    assert r.resolve("gpt-4").fallbacks == ("claude-opus-4-5-20251101", "gemini-2.5-pro")
    assert r.resolve("claude-sonnet-4-5").fallbacks == ("gpt-4o", "gemini-2.5-pro")
    assert r.resolve("claude-haiku-4-5").fallbacks == ("gpt-4o-mini", "gemini-2.5-flash")
    assert r.resolve("gemini-2.5-flash").fallbacks == ("gpt-4o-mini", "claude-haiku-4-5")
    assert r.resolve("gemini-2.5-pro").fallbacks == ("gpt-4o", "claude-sonnet-4-5")
    for m in r.models.values():
        assert m.fallbacks, f"{m.name} has no failover chain"
        assert all(r.resolve(f) is not None for f in m.fallbacks)


def test_only_anthropic_can_continue_a_prefill_by_default():
    r = registry()
    assert r.resolve("claude-haiku-4-5").can("prefill")
    assert not r.resolve("gpt-4o-mini").can("prefill") and not r.resolve("gemini-2.5-flash").can("prefill")


def test_claude_3_5_aliases_send_a_dated_id_upstream():
    assert registry().resolve("claude-3-5-haiku").upstream == "claude-3-5-haiku-20241022"


def test_explicit_provider_prefix_routes_an_unknown_model():
    m = registry().resolve("anthropic/claude-opus-4-8")
    assert (m.provider, m.upstream, m.name) == ("anthropic", "claude-opus-4-8", "anthropic/claude-opus-4-8")
    assert registry().resolve("nobody/x") is None
    assert registry().resolve("gpt-99") is None


def test_a_model_is_a_data_change(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[models."gpt-5"]\nprovider = "openai"\ncontext_window = 400000\nfallbacks = ["gpt-4o"]\n'
                   'read_timeout = 600\n')
    m = registry(GATEWAY_CONFIG=str(cfg)).resolve("gpt-5")
    assert (m.provider, m.context_window, m.fallbacks, m.read_timeout) == ("openai", 400000, ("gpt-4o",), 600)


def test_a_config_model_with_an_unknown_provider_stops_start_up(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[models."x"]\nprovider = "nowhere"\n')
    with pytest.raises(ConfigError):
        registry(GATEWAY_CONFIG=str(cfg))


OLLAMA = '''
[providers.ollama]
base_url = "http://127.0.0.1:11434/v1"
api_key_env = "OLLAMA_KEY"

[models."llama3.1"]
provider = "ollama"
upstream = "llama3.1:8b"
input_price = 0.05
output_price = 0.10
fallbacks = ["gpt-4o-mini"]
'''


@responses.activate
def test_an_openai_compatible_server_from_config_is_routed_listed_and_priced(make_app, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text(OLLAMA)
    app, key = make_app(GATEWAY_CONFIG=str(cfg), OLLAMA_KEY="ollama-secret")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    upstream = responses.post("http://127.0.0.1:11434/v1/chat/completions", json={
        "id": "chatcmpl-o", "object": "chat.completion", "created": 1, "model": "llama3.1:8b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi from llama"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    resp = client.post("/v1/chat/completions", json={"model": "llama3.1", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200 and resp.headers["X-Provider"] == "ollama"
    assert json.loads(upstream.calls[0].request.body)["model"] == "llama3.1:8b"
    assert upstream.calls[0].request.headers["Authorization"] == "Bearer ollama-secret"
    assert "llama3.1" in {m["id"] for m in client.get("/v1/models").get_json()["data"]}
    m = app.extensions["gateway"].registry.resolve("llama3.1")
    assert m.price is not None and str(m.price[0]) == "0.05"


def test_only_gemini_2_0_flash_is_sent_penalties():
    """Gemini 2.5 answers 400 "Penalty is not enabled for models/gemini-2.5-flash" to a request with
    presence_penalty or frequency_penalty; the model table's "penalties" capability says who takes them."""
    from gateway.providers.gemini import GeminiProvider
    reg = registry(GEMINI_API_KEY="AIza-test")
    provider = GeminiProvider(reg.providers["gemini"])
    request = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "presence_penalty": 0.5,
               "frequency_penalty": 0.25}
    sent = {}
    for name in ("gemini-2.0-flash", "gemini-2.5-flash", "gemini-2.5-pro", "gemini/gemini-3-pro-preview"):
        _, _, body = provider.prepare(request, reg.resolve(name), stream=False)
        sent[name] = {k: v for k, v in body.get("generationConfig", {}).items() if "Penalty" in k}
    assert sent == {"gemini-2.0-flash": {"presencePenalty": 0.5, "frequencyPenalty": 0.25},
                    "gemini-2.5-flash": {}, "gemini-2.5-pro": {}, "gemini/gemini-3-pro-preview": {}}


@pytest.mark.parametrize("name, upstream", [
    ("openai/meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),  # vLLM's ids have slashes
    ("openai/llama3.1:8b-instruct-q4_K_M", "llama3.1:8b-instruct-q4_K_M"),            # Ollama's, a colon
    ("anthropic/claude-opus-4-8", "claude-opus-4-8"),
    ("gemini/gemini-3-pro-preview", "gemini-3-pro-preview"),
])
def test_provider_slash_routes_the_ids_providers_use(name, upstream):
    assert registry().resolve(name).upstream == upstream


@pytest.mark.parametrize("name", ["gemini/../v1beta/files", "gemini/a/b", "gemini/x?y", "gemini/x#y", "gemini/%2e%2e",
                                  "gemini/x:streamGenerateContent", "openai/a b", "openai/a\nb", "openai/\u00e9",
                                  "openai/" + "m" * 257])
def test_provider_slash_refuses_what_is_no_model_id(name):
    assert registry().resolve(name) is None
