"""The Flask app the factory builds."""
from gateway.webapp import KEPT


def test_functions_made_per_request_are_not_kept_by_the_coroutine_check(make_app):
    """The app remembers whether a hook is a coroutine, but not for a function made on every request."""
    from flask import after_this_request
    app, _ = make_app()

    @app.get("/per-request")
    def per_request():
        @after_this_request
        def stamp(resp):
            resp.headers["X-Stamped"] = "1"
            return resp
        return "ok"

    client = app.test_client()
    for _ in range(KEPT + 50):
        assert client.get("/per-request").headers["X-Stamped"] == "1"
    assert len(app._sync) <= KEPT


def test_a_fixed_route_is_matched_once_then_remembered(make_app, monkeypatch):
    from werkzeug.routing import MapAdapter
    app, key = make_app()
    client = app.test_client()
    calls = []
    real_match = MapAdapter.match
    monkeypatch.setattr(MapAdapter, "match", lambda self, *a, **k: (calls.append(1), real_match(self, *a, **k))[1])
    for _ in range(5):
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert len(calls) == 1


def test_what_the_matcher_refuses_is_asked_again_and_answered_as_before(make_app):
    app, key = make_app()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert client.get("/v1/nowhere", headers=auth).status_code == 404
        wrong = client.get("/v1/chat/completions", headers=auth)
        assert wrong.status_code == 405 and "POST" in wrong.headers["Allow"]
    assert app._routes == {}


def test_a_route_with_variables_gets_its_own_values_each_time(make_app):
    app, _ = make_app()

    @app.get("/echo/<name>")
    def echo(name):
        return name

    client = app.test_client()
    assert [client.get(f"/echo/{n}").text for n in ("a", "b", "a")] == ["a", "b", "a"]
    assert all(rule_key[1] != "/echo/a" for rule_key in app._routes)


def test_the_memo_is_bounded(make_app):
    app, _ = make_app()
    app.add_url_rule("/many/<int:n>", "many", lambda n: str(n))
    for n in range(KEPT + 20):
        app.add_url_rule(f"/fixed{n}", f"fixed{n}", lambda: "ok")
    client = app.test_client()
    for n in range(KEPT + 20):
        assert client.get(f"/fixed{n}").text == "ok"
    assert len(app._routes) <= KEPT
    assert client.get(f"/fixed{KEPT + 19}").text == "ok"   # past the bound: matched the long way, still right


def test_a_provider_slash_model_id_that_chat_routes_is_retrievable(client):
    # client.models.retrieve("anthropic/claude-opus-4-8") answered 404 for a model /v1/chat/completions serves.
    resp = client.get("/v1/models/anthropic/claude-opus-4-8")
    assert resp.status_code == 200
    assert resp.get_json() == {"id": "anthropic/claude-opus-4-8", "object": "model", "created": 1700000000,
                               "owned_by": "anthropic"}
    assert client.get("/v1/models/nobody/claude-opus-4-8").status_code == 404
    assert client.get("/v1/models/claude-opus-4-8").status_code == 404
