"""The Flask app the factory builds."""


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
    for _ in range(app._SYNC_KEPT + 50):
        assert client.get("/per-request").headers["X-Stamped"] == "1"
    assert len(app._sync) <= app._SYNC_KEPT
