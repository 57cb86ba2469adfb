"""The upstream session reads requests' environment settings (proxies, CA bundle) once per origin."""
import json

import pytest
import responses as responses_lib

from gateway.providers import transport
from tests.conftest import simulator_running

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
    with simulator_running("--tokens", "12") as base:
        yield base


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


# --- the direct adapter call keeps what Session.post did that matters ---

def _call(session):
    from gateway import config
    from gateway.providers.openai import OpenAIProvider
    from gateway.providers.registry import Registry
    registry = Registry(config.load({"OPENAI_API_KEY": "sk-test-SECRET"}))
    provider = OpenAIProvider(registry.providers["openai"])
    model = registry.resolve("gpt-4o-mini")
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return transport.complete(session, provider, request, model, "chatcmpl-1", 1, (5, 10))


@responses_lib.activate
def test_environment_proxy_and_ca_bundle_reach_the_adapter(monkeypatch):
    from tests.providers.wire import OPENAI_URL, openai_completion
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/corporate.pem")
    upstream = responses_lib.post(OPENAI_URL, json=openai_completion())
    _call(transport.make_session(4))
    sent = upstream.calls[0].request
    assert sent.req_kwargs["verify"] == "/etc/ssl/certs/corporate.pem"
    assert sent.req_kwargs["proxies"]["https"] == "http://proxy.internal:3128"
    assert sent.headers["Authorization"] == "Bearer sk-test-SECRET"
    assert int(sent.headers["Content-Length"]) == len(sent.body)
    assert "gzip" in sent.headers["Accept-Encoding"] and sent.headers["User-Agent"]


@responses_lib.activate
def test_a_redirect_is_an_error_that_says_where_without_its_query(monkeypatch):
    from tests.providers.wire import OPENAI_URL
    responses_lib.post(OPENAI_URL, status=308,
                       headers={"Location": "https://user:pw@api.example.com/v1/chat/completions?key=SECRET"})
    with pytest.raises(transport.UpstreamError) as e:
        _call(transport.make_session(4))
    message = e.value.error["message"]
    assert e.value.status == 502 and e.value.reason == "redirect" and "308" in message
    assert "https://api.example.com/v1/chat/completions" in message
    assert "SECRET" not in message and "pw" not in message


@pytest.mark.parametrize("location, shown", [
    ("https://api.example.com:8443/v1/x?k=1", "https://api.example.com:8443/v1/x"),
    ("https://api.example.com:notaport/v1", "an invalid location"),
    ("/v2/chat/completions", "/v2/chat/completions"),
    ("", "nowhere"),
    ("http://[oops/v1", "an invalid location"),
])
def test_a_redirect_target_is_shown_safely_whatever_its_form(location, shown):
    assert transport._where(location) == shown


def test_a_header_the_http_client_refuses_is_a_502_that_does_not_echo_it(monkeypatch):
    from gateway.providers.openai import OpenAIProvider

    class Spec:
        name, api_key, base_url = "openai", "sk-SECRET\nX-Injected: 1", "http://127.0.0.1:9/v1"
    provider = OpenAIProvider(Spec())
    with pytest.raises(transport.UpstreamError) as e:
        transport.post(transport.make_session(4), provider, "http://127.0.0.1:9/v1/chat/completions",
                       {"Authorization": "Bearer " + Spec.api_key}, {"model": "m"}, (1, 1), False)
    message = e.value.error["message"]
    assert e.value.status == 502 and e.value.reason == "bad_header" and "API key" in message
    assert "SECRET" not in message


def test_provider_keys_lose_the_white_space_of_a_mounted_secret():
    from gateway import config
    settings = config.load({"OPENAI_API_KEY": "sk-abc\n", "ANTHROPIC_API_KEY": "  ", "GEMINI_API_KEY": "AIza \n"})
    assert settings.provider_keys == {"openai": "sk-abc", "anthropic": None, "gemini": "AIza"}


def test_a_bad_header_is_failed_over_not_retried():
    from gateway.providers.failover import RETRY_ONCE
    assert "bad_header" not in RETRY_ONCE and "redirect" not in RETRY_ONCE


@pytest.mark.parametrize("raw,expected", [
    (b'{"a": "caf\xc3\xa9", "n": 1}', {"a": "café", "n": 1}),                       # UTF-8: orjson
    ('{"a": "café"}'.encode("utf-16"), {"a": "café"}),                               # UTF-16 with BOM: requests
])
def test_a_json_body_is_read_whichever_way_it_needs(raw, expected):
    import requests
    resp = requests.Response()
    resp._content, resp.status_code = raw, 200
    assert transport._json_body(resp) == expected


@pytest.mark.parametrize("raw", [b"", b"<html>502</html>", b'{"a": '])
def test_a_body_that_is_not_json_is_a_value_error(raw):
    import requests
    resp = requests.Response()
    resp._content, resp.status_code = raw, 200
    with pytest.raises(ValueError):
        transport._json_body(resp)


def test_the_request_body_is_held_in_a_bytes_object_of_its_own_size():
    import sys
    import tracemalloc
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        data = transport._json_bytes(body)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert json.loads(data) == body
    assert held < sys.getsizeof(data) + 512       # orjson's own output held ~13 times that


# --- an answer past GATEWAY_MAX_RESPONSE_BYTES is not read to its end ---

LIMIT = 65536


@responses_lib.activate
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "no-length"])
def test_a_body_past_the_limit_is_a_502_too_large_and_is_not_kept(declared):
    from tests.providers.wire import OPENAI_URL, openai_completion
    body = json.dumps(openai_completion(text="x" * LIMIT)).encode()
    responses_lib.post(OPENAI_URL, body=body, content_type="application/json",
                       auto_calculate_content_length=declared)
    with pytest.raises(transport.UpstreamError) as e:
        _call(transport.make_session(4, max_body=LIMIT))
    assert e.value.status == 502 and e.value.reason == "too_large"
    assert "65,536 bytes" in e.value.error["message"] and "GATEWAY_MAX_RESPONSE_BYTES" in e.value.error["message"]


@responses_lib.activate
def test_a_body_at_the_limit_is_read_as_before():
    from tests.providers.wire import OPENAI_URL, openai_completion
    small = openai_completion(text="")
    text = "x" * (LIMIT - len(json.dumps(small).encode()))
    body = json.dumps(openai_completion(text=text)).encode()
    assert len(body) == LIMIT
    responses_lib.post(OPENAI_URL, body=body, content_type="application/json")
    completion = _call(transport.make_session(4, max_body=LIMIT))
    assert completion["choices"][0]["message"]["content"] == text


@responses_lib.activate
def test_the_limit_counts_the_decoded_body_not_the_compressed_one():
    import gzip
    from tests.providers.wire import OPENAI_URL, openai_completion
    body = json.dumps(openai_completion(text="x" * LIMIT * 4)).encode()
    squeezed = gzip.compress(body)
    assert len(squeezed) < LIMIT
    responses_lib.post(OPENAI_URL, body=squeezed, content_type="application/json",
                       headers={"Content-Encoding": "gzip"})
    with pytest.raises(transport.UpstreamError) as e:
        _call(transport.make_session(4, max_body=LIMIT))
    assert e.value.reason == "too_large"


def _stream_call(session, body, status=200):
    from gateway import config
    from gateway.providers.openai import OpenAIProvider
    from gateway.providers.registry import Registry
    from tests.providers.wire import OPENAI_URL
    responses_lib.post(OPENAI_URL, body=body, status=status, content_type="text/event-stream",
                       auto_calculate_content_length=False)
    registry = Registry(config.load({"OPENAI_API_KEY": "sk-test-SECRET"}))
    provider = OpenAIProvider(registry.providers["openai"])
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    return transport.open_stream(session, provider, request, registry.resolve("gpt-4o-mini"), "chatcmpl-1", 1,
                                 (5, 10), 10)


@responses_lib.activate
def test_a_stream_event_past_the_limit_ends_the_stream_with_too_large():
    from tests.providers.wire import openai_stream
    body = openai_stream(["Hel", "lo"])
    first_event_end = body.index(b"\n\n") + 2
    body = body[:first_event_end] + b"data: " + b"x" * (LIMIT * 2) + body[first_event_end:]
    stream = _stream_call(transport.make_session(4, max_body=LIMIT), body)
    got = []
    with pytest.raises(transport.UpstreamError) as e:
        for chunk in stream:
            got.append(chunk)
    assert e.value.status == 502 and e.value.reason == "too_large" and "stream event" in e.value.error["message"]
    assert got and got[0]["choices"][0]["delta"].get("role") == "assistant"


@responses_lib.activate
def test_a_long_stream_of_small_events_is_not_limited():
    from tests.providers.wire import openai_stream
    pieces = ["word "] * 2000
    body = openai_stream(pieces)
    assert len(body) > LIMIT * 4
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in
                   _stream_call(transport.make_session(4, max_body=LIMIT), body) if c.get("choices"))
    assert text == "".join(pieces)


@responses_lib.activate
def test_a_stream_error_body_past_the_limit_is_too_large():
    with pytest.raises(transport.UpstreamError) as e:
        _stream_call(transport.make_session(4, max_body=LIMIT), b"x" * (LIMIT * 2), status=500)
    assert e.value.status == 502 and e.value.reason == "too_large"


def test_the_limit_is_a_setting():
    from gateway import config
    assert config.load({}).max_response_bytes == 64 << 20
    assert config.load({"GATEWAY_MAX_RESPONSE_BYTES": "100000"}).max_response_bytes == 100000
    with pytest.raises(config.ConfigError, match="GATEWAY_MAX_RESPONSE_BYTES"):
        config.load({"GATEWAY_MAX_RESPONSE_BYTES": "10"})


# The per-event bound finds an event's end wherever the chunks split it (servers that write line by line send
# each event's blank line in a chunk of its own).

@pytest.mark.parametrize("chunks", [
    [b"data: a\n", b"\n"],          # the blank line in a chunk of its own
    [b"data: a\r\n", b"\r\n"],      # CRLF
    [b"data: a\r", b"\r"],          # CR
    [b"data: a\n", b"\r\n"],        # mixed
    [b"data: a\r\n\r", b"\n"],      # split inside the second CRLF
], ids=["lf", "crlf", "cr", "lf-crlf", "crlf-split"])
def test_many_small_events_split_anywhere_are_not_too_large(chunks):
    stream = chunks * 100
    assert b"".join(transport._events_within(iter(stream), 50)) == b"".join(stream)


@pytest.mark.parametrize("chunks", [
    [b"data: " + b"x" * 40, b"y" * 40],          # one event in two chunks, no blank line
    [b"data: " + b"x" * 40 + b"\r", b"\n" + b"y" * 40],   # CR then LF across chunks is one line end, not two
], ids=["no-end", "crlf-across-chunks"])
def test_one_event_past_the_limit_is_too_large_across_chunks(chunks):
    with pytest.raises(transport.AnswerTooLarge):
        list(transport._events_within(iter(chunks), 50))


def _serve_chunked(pieces):
    """A one-shot HTTP server answering 200 text/event-stream, one HTTP chunk per piece; its base URL."""
    import socket
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run():
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, rest = data.split(b"\r\n\r\n", 1)
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(rest) < length:
                rest += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in pieces:
                conn.sendall(b"%X\r\n%s\r\n" % (len(piece), piece))
            conn.sendall(b"0\r\n\r\n")
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_a_server_writing_line_by_line_streams_past_the_limit_in_small_events():
    from gateway import config
    from gateway.providers.openai import OpenAIProvider
    from gateway.providers.registry import Registry
    from tests.providers.wire import openai_stream
    words = ["word "] * 2000
    body = openai_stream(words)
    pieces = []
    for event in body.split(b"\n\n")[:-1]:
        pieces += [event + b"\n", b"\n"]
    assert len(body) > 4 * LIMIT and max(map(len, pieces)) < 1000
    base = _serve_chunked(pieces)
    registry = Registry(config.load({"OPENAI_API_KEY": "sk-test-SECRET", "OPENAI_BASE_URL": base + "/v1"}))
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stream = transport.open_stream(transport.make_session(4, max_body=LIMIT),
                                   OpenAIProvider(registry.providers["openai"]), request,
                                   registry.resolve("gpt-4o-mini"), "chatcmpl-1", 1, (5, 10), 10)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream if c.get("choices"))
    assert text == "".join(words)
