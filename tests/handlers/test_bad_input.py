"""Every kind of bad input gets OpenAI's error shape with the right status, never a 500."""
import json

import pytest
import responses
from werkzeug.test import EnvironBuilder, run_wsgi_app

MSG = [{"role": "user", "content": "hi"}]


def _error(resp, status):
    assert resp.status_code == status, resp.data
    body = resp.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def test_invalid_json(client):
    err = _error(client.post("/v1/chat/completions", data="{not json", content_type="application/json"), 400)
    assert err["code"] == "invalid_json"


def test_empty_body(client):
    _error(client.post("/v1/chat/completions", data=""), 400)


@pytest.mark.parametrize("body", [[1, 2], "text", 3, None])
def test_a_body_that_is_not_an_object(client, body):
    _error(client.post("/v1/chat/completions", json=body), 400)


@pytest.mark.parametrize("body,param", [
    ({"model": "gpt-4o-mini"}, "messages"),
    ({"model": "gpt-4o-mini", "messages": []}, "messages"),
    ({"model": "gpt-4o-mini", "messages": "hi"}, "messages"),
    ({"messages": MSG}, "model"),
    ({"model": "", "messages": MSG}, "model"),
    ({"model": 4, "messages": MSG}, "model"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o-mini", "messages": [{"content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user"}]}, "messages[0].content"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "gpt-4o-mini", "messages": [MSG[0], "x"]}, "messages[1]"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0].type"),
    ({"model": "gpt-4o-mini", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "gpt-4o-mini", "messages": MSG, "temperature": 2.5}, "temperature"),
    ({"model": "gpt-4o-mini", "messages": MSG, "temperature": "hot"}, "temperature"),
    ({"model": "gpt-4o-mini", "messages": MSG, "top_p": 1.5}, "top_p"),
    ({"model": "gpt-4o-mini", "messages": MSG, "n": 0}, "n"),
    ({"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"model": "gpt-4o-mini", "messages": MSG, "max_tokens": 1.5}, "max_tokens"),
    ({"model": "gpt-4o-mini", "messages": MSG, "presence_penalty": -3}, "presence_penalty"),
    ({"model": "gpt-4o-mini", "messages": MSG, "stream": "yes"}, "stream"),
    ({"model": "gpt-4o-mini", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "gpt-4o-mini", "messages": MSG, "tools": [{"type": "function"}]}, "tools[0]"),
    ({"model": "gpt-4o-mini", "messages": MSG, "tool_choice": "sometimes"}, "tool_choice"),
    ({"model": "gpt-4o-mini", "messages": MSG, "response_format": {"type": "yaml"}}, "response_format"),
    # these reached the Claude translator and were a 500 there
    ({"model": "claude-haiku-4-5", "messages": MSG, "safety_identifier": 123}, "safety_identifier"),
    ({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": 5}}]}]}, "messages[0].content[0].file.file_data"),
])
def test_bad_fields_name_the_param(client, body, param):
    err = _error(client.post("/v1/chat/completions", json=body), 400)
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"


def test_unknown_model_is_404_model_not_found(client):
    err = _error(client.post("/v1/chat/completions", json={"model": "gpt-99", "messages": MSG}), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"


@pytest.mark.parametrize("model", [
    "gemini/../../../upload/v1beta/files?",   # the id goes in Gemini's URL path, with the gateway's key
    "gemini/../../v1beta/cachedContents?x=",
    "gemini/gemini-2.5-flash:generateContent?alt=sse#",
    "anthropic/x\r\nX-Injected: 1",            # the name goes back in the X-Model header
    "openai/模型",
    "openai/two words",
    "openai/" + "m" * 300,
])
def test_a_provider_slash_model_name_that_cannot_be_an_id_is_refused_before_any_upstream_call(client, model):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as upstream:
        err = _error(client.post("/v1/chat/completions", json={"model": model, "messages": MSG}), 404)
        fallback = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": "through a bad fallback"}]},
                               headers={"X-Gateway-Fallbacks": model.replace("\r\n", " ")})
        assert len(upstream.calls) == 0
    assert err["code"] == "model_not_found" and err["param"] == "model"
    _error(fallback, 400)


# gunicorn sets wsgi.input_terminated (it ends the input stream itself), and the body is then read from the
# stream directly; werkzeug's test client does not, and werkzeug's wrapped stream reads it.
SERVERS = [pytest.param({}, id="plain-wsgi"), pytest.param({"wsgi.input_terminated": True}, id="input-terminated")]


@pytest.mark.parametrize("environ", SERVERS)
def test_body_over_the_limit_is_413(make_app, environ):
    app, key = make_app(GATEWAY_MAX_REQUEST_BYTES="2048")
    big = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 4096}]}
    resp = app.test_client().post("/v1/chat/completions", json=big, headers={"Authorization": f"Bearer {key}"},
                                  environ_overrides=environ)
    assert _error(resp, 413)["code"] == "request_too_large"


@pytest.mark.parametrize("environ", SERVERS)
def test_a_body_at_the_limit_is_read_whole(make_app, environ):
    app, key = make_app(GATEWAY_MAX_REQUEST_BYTES="2048")
    body = b'{"model": "gpt-4o-mini", "messages": [], "pad": "' + b"x" * 1000 + b'"}'
    body = body.replace(b'"pad": "', b'"pad": "' + b"y" * (2048 - len(body)))
    assert len(body) == 2048
    resp = app.test_client().post("/v1/chat/completions", data=body, content_type="application/json",
                                  headers={"Authorization": f"Bearer {key}"}, environ_overrides=environ)
    assert _error(resp, 400)["param"] == "messages"   # parsed whole: the check after parsing names the field


# A chunked body has no Content-Length: gunicorn de-chunks it and ends the stream (wsgi.input_terminated).
def _chunked(app, key, body):
    environ = EnvironBuilder(path="/v1/chat/completions", method="POST", data=body, content_type="application/json",
                             headers={"Authorization": f"Bearer {key}"}).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    app_iter, status, headers = run_wsgi_app(app, environ)
    return app.response_class(b"".join(app_iter), status, headers)


@pytest.mark.parametrize("padding", [b"", b" " * 4096], ids=["cut-mid-json", "valid-json-then-padding"])
def test_a_chunked_body_over_the_limit_is_413_not_cut(make_app, padding):
    app, key = make_app(GATEWAY_MAX_REQUEST_BYTES="2048")
    content = "x" * (0 if padding else 4096)
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}).encode()
    resp = _chunked(app, key, body + padding)
    assert _error(resp, 413)["code"] == "request_too_large"


def test_a_chunked_body_at_the_limit_is_read_whole(make_app):
    app, key = make_app(GATEWAY_MAX_REQUEST_BYTES="2048")
    body = b'{"model": "gpt-4o-mini", "messages": [], "pad": "' + b"x" * 1000 + b'"}'
    body = body.replace(b'"pad": "', b'"pad": "' + b"y" * (2048 - len(body)))
    assert _error(_chunked(app, key, body), 400)["param"] == "messages"


def test_wrong_method_is_405(client):
    _error(client.get("/v1/chat/completions"), 405)


def test_unknown_path_is_404(client):
    assert _error(client.get("/nowhere"), 404)["code"] == "unknown_url"


def test_an_unexpected_error_is_a_500_with_the_request_id_and_no_trace(client, monkeypatch):
    from gateway.handlers import chat

    def boom(_):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(chat, "validate_chat", boom)
    resp = client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG})
    err = _error(resp, 500)
    assert resp.headers["X-Request-Id"] in err["message"]
    assert "secret internals" not in resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)


def test_unknown_fields_pass_validation(client, monkeypatch):
    seen = {}

    def fake_run(body, model, *args, **kwargs):
        seen.update(body)
        raise RuntimeError("stop here")
    monkeypatch.setattr(client.application.extensions["gateway"].manager, "run", fake_run)
    client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG, "reasoning_effort": "low",
                                              "metadata": {"a": "b"}})
    assert seen["reasoning_effort"] == "low" and seen["metadata"] == {"a": "b"}


@pytest.mark.parametrize("path", ["/v1//models", "/v1///models"])
def test_doubled_slashes_are_read_as_one_not_answered_with_an_html_redirect(client, path):
    # What a base URL ending in "/" joined with "/models" gives; werkzeug's 308 had an HTML body.
    resp = client.get(path)
    assert resp.status_code == 200 and resp.get_json()["object"] == "list"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/healthz"])
def test_options_without_cors_is_a_json_405(client, path):
    resp = client.open(path, method="OPTIONS")
    _error(resp, 405)
    assert resp.content_type.startswith("application/json")
