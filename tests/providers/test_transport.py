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
