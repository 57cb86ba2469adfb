import pytest

from gateway.store.keys import revoke_key

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _assert_401(resp):
    assert resp.status_code == 401
    err = resp.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == "invalid_api_key"
    assert resp.headers["X-Request-Id"].startswith("req_")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic Z3c6eA==", "Bearer sk-openai-style-key",
                                    "Bearer gw_short", "Bearer gw_" + "x" * 43])
def test_missing_malformed_or_unknown_keys_get_401(app_key, header):
    app, _ = app_key
    headers = {"Authorization": header} if header is not None else {}
    _assert_401(app.test_client().post("/v1/chat/completions", json=CHAT, headers=headers))


def test_a_revoked_key_gets_401(make_app):
    app, key = make_app(GATEWAY_KEY_CACHE_SECONDS="0.01")
    revoke_key(app.extensions["gateway"].engine, key[:11])
    _assert_401(app.test_client().get("/v1/models", headers={"Authorization": f"Bearer {key}"}))


def test_every_v1_route_needs_a_key(app_key):
    app, _ = app_key
    c = app.test_client()
    for path in ("/v1/models", "/v1/models/gpt-4o", "/v1/embeddings"):
        _assert_401(c.get(path))


def test_health_needs_no_key(app_key):
    app, _ = app_key
    c = app.test_client()
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 200


def test_a_valid_key_lists_models(client):
    resp = client.get("/v1/models")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["object"] == "list"
    ids = {m["id"] for m in body["data"]}
    assert {"gpt-4o-mini", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "gemini-2.5-flash"} <= ids
    assert all(set(m) >= {"id", "object", "created", "owned_by"} for m in body["data"])


def test_with_the_database_unreachable_known_keys_work_and_others_get_a_clear_503(make_app):
    from gateway.extensions import make_engine
    from gateway.store.keys import create_key
    app, key = make_app(GATEWAY_KEY_CACHE_SECONDS="0.01")
    gw = app.extensions["gateway"]
    other, _ = create_key(gw.engine, "not seen by this worker yet")
    c = app.test_client()
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    gw.keys.engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:9/gone")   # nothing listens on port 9
    import time
    time.sleep(0.02)                                  # the cached answer has expired
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    resp = c.get("/v1/models", headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    err = resp.get_json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "service_unavailable"
    assert "database" in err["message"]


@pytest.mark.parametrize("token,says", [("sk-openai-style-key", "start with 'gw_'"), ("gw_short", "not a gateway key")])
def test_a_token_that_is_not_a_gateway_key_is_told_what_one_looks_like(app_key, token, says):
    app, _ = app_key
    resp = app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {token}"})
    _assert_401(resp)
    message = resp.get_json()["error"]["message"]
    assert says in message and token not in message
