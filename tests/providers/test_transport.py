"""The upstream session reads requests' environment settings (proxies, CA bundle) once per origin."""
import pytest

from gateway.providers import transport

URL = "https://api.openai.com/v1/chat/completions"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def settings(session, url=URL, stream=False):
    return session.merge_environment_settings(url, {}, stream, None, None)


def test_proxy_and_ca_bundle_variables_still_apply(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/corporate.pem")
    session = transport.make_session(4)
    got = settings(session)
    assert got["proxies"]["https"] == "http://proxy.internal:3128"
    assert got["verify"] == "/etc/ssl/certs/corporate.pem"
    assert "https" not in settings(session, "https://127.0.0.1:8000/v1/chat/completions")["proxies"]


def test_they_are_read_once_per_origin(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    session = transport.make_session(4)
    first = settings(session)
    first["proxies"]["https"] = "changed by a caller"
    monkeypatch.delenv("HTTPS_PROXY")
    again = settings(session, URL.replace("chat/completions", "models"))
    assert again["proxies"]["https"] == "http://proxy.internal:3128"
    assert "https" not in settings(session, "https://api.anthropic.com/v1/messages")["proxies"]
    assert settings(session, stream=True)["stream"] is True


def test_explicit_arguments_and_many_origins_are_not_cached():
    session = transport.make_session(4)
    assert settings(session)["verify"] is True
    assert session.merge_environment_settings(URL, {}, False, False, None)["verify"] is False
    for i in range(transport._ORIGINS_KEPT * 2):
        settings(session, f"https://images{i}.example/x.png")
    assert len(session._environment) <= transport._ORIGINS_KEPT


# --- streams give their connection back when they end cleanly (against the simulator, over real sockets) ---

@pytest.fixture(scope="module")
def simulator_base():
    from gateway.simulator import spawn_process
    proc, base = spawn_process(["--tokens", "12"])
    yield base
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def upstream(simulator_base, monkeypatch):
    import urllib3.connection
    connects = []
    real_connect = urllib3.connection.HTTPConnection.connect
    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect",
                        lambda self: (connects.append(1), real_connect(self))[1])
    from gateway import config
    from gateway.providers.openai import OpenAIProvider
    from gateway.providers.registry import Registry
    registry = Registry(config.load({"OPENAI_API_KEY": "sk-sim", "OPENAI_BASE_URL": simulator_base + "/v1"}))
    provider = OpenAIProvider(registry.providers["openai"])
    session = transport.make_session(4)
    model = registry.resolve("gpt-4o-mini")
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "stream": True}

    def open_stream():
        return transport.open_stream(session, provider, request, model, "chatcmpl-1", 1, (5, 10), 10)

    def connections_made():
        return len(connects)
    return open_stream, connections_made


def test_a_finished_stream_gives_its_connection_back_to_the_pool(upstream):
    open_stream, connections_made = upstream
    for _ in range(3):
        chunks = list(open_stream())
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert connections_made() == 1


def test_a_stream_left_midway_drops_its_connection(upstream):
    open_stream, connections_made = upstream
    stream = open_stream()
    next(iter(stream))
    stream.close()
    assert list(open_stream())[-1]["choices"][0]["finish_reason"] == "stop"
    assert connections_made() == 2
