def preflight(client, origin, headers="authorization,content-type"):
    return client.options("/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers})


def test_preflight_from_an_allowed_origin_needs_no_key(make_app):
    app, _ = make_app(GATEWAY_CORS_ORIGINS="https://app.example.com")
    resp = preflight(app.test_client(), "https://app.example.com")
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "authorization" in resp.headers["Access-Control-Allow-Headers"].lower()
    assert resp.headers.getlist("Vary") == ["Origin"]  # once: the preflight's own, not again on the way out


def test_preflight_from_another_origin_gets_no_cors_headers(make_app):
    app, _ = make_app(GATEWAY_CORS_ORIGINS="https://app.example.com")
    resp = preflight(app.test_client(), "https://evil.example.com")
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_star_allows_any_origin_and_exposes_the_gateway_headers(make_app):
    app, key = make_app(GATEWAY_CORS_ORIGINS="*")
    resp = app.test_client().get("/v1/models", headers={"Origin": "https://x.example", "Authorization": f"Bearer {key}"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    exposed = resp.headers["Access-Control-Expose-Headers"]
    for h in ("X-Request-Id", "X-Provider", "X-Cost-USD", "X-Cache-Hit", "X-RateLimit-Remaining"):
        assert h in exposed


def test_no_cors_unless_configured(app_key):
    app, _ = app_key
    assert "Access-Control-Allow-Origin" not in preflight(app.test_client(), "https://x.example").headers
