import json
import logging

from gateway.applog import JsonFormatter


def test_log_lines_are_json_with_the_request_id(app_key):
    app, _ = app_key
    record = logging.LogRecord("gateway", logging.WARNING, __file__, 1, "upstream %s slow", ("openai",), None)
    with app.test_request_context("/v1/models"):
        from flask import g
        g.request_id = "req_abc"
        line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "req_abc"
    assert line["message"] == "upstream openai slow" and line["level"] == "warning"


def test_outside_a_request_there_is_no_request_id():
    record = logging.LogRecord("gateway", logging.INFO, __file__, 1, "started", (), None)
    assert "request_id" not in json.loads(JsonFormatter().format(record))
