"""gunicorn.conf.py's access logger writes, for the gateway's format, the line gunicorn's own would."""
import datetime as dt
import importlib.util
import io
import logging
import os

import pytest
from gunicorn import glogging
from gunicorn.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def conf():
    spec = importlib.util.spec_from_file_location("gunicorn_conf_access", os.path.join(ROOT, "gunicorn.conf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _line(logger_class, fmt, resp, environ, took):
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", fmt)
    logger = logger_class(cfg)
    out = io.StringIO()
    for h in logger.access_log.handlers:
        h.setStream(out)
    logger.access(resp, Req(), environ, took)
    return out.getvalue()


class Req:
    headers = [("HOST", "gw"), ("AUTHORIZATION", "Bearer gw_x")]


class Resp:
    def __init__(self, status, headers, sent):
        self.status, self.headers, self.sent = status, headers, sent


def _environ(**extra):
    env = {"REMOTE_ADDR": "10.0.0.7", "REQUEST_METHOD": "POST", "RAW_URI": "/v1/chat/completions",
           "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/v1/chat/completions", "QUERY_STRING": ""}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


CASES = [
    (Resp("200 OK", [("Content-Type", "application/json"), ("X-Request-Id", "req_abc")], 512), _environ(),
     dt.timedelta(microseconds=1500)),
    (Resp("429 Too Many Requests", [("x-request-id", "req_1")], 0), _environ(), dt.timedelta(seconds=2, microseconds=999)),
    (Resp("404 Not Found", [], None), _environ(REMOTE_ADDR=None), dt.timedelta(0)),   # no id, no address, nothing sent
    (Resp("200 OK", [("X-Request-Id", 'say "hi"')], 7),
     _environ(RAW_URI='/v1/models?q="x"', REQUEST_METHOD="GET"), dt.timedelta(milliseconds=31)),  # quotes escaped
    (Resp(200, [("X-REQUEST-ID", "r")], 3), _environ(SERVER_PROTOCOL="HTTP/1.0"), dt.timedelta(seconds=61)),
]


@pytest.mark.parametrize("resp,environ,took", CASES)
def test_the_line_is_gunicorns(conf, resp, environ, took):
    ours = _line(conf.logger_class, conf.ACCESS_LOG_FORMAT, resp, environ, took)
    theirs = _line(glogging.Logger, conf.ACCESS_LOG_FORMAT, resp, environ, took)
    assert ours == theirs and ours.endswith("\n") and ours.count("\n") == 1


def test_another_format_takes_gunicorns_path(conf):
    resp, environ, took = CASES[0]
    fmt = '%(h)s %(l)s %(t)s "%(r)s" %(s)s %(a)s'
    ours = _line(conf.logger_class, fmt, resp, environ, took)
    assert ours.startswith('10.0.0.7 - [') and ours.rstrip().endswith('"POST /v1/chat/completions HTTP/1.1" 200 -')


def test_no_line_when_the_access_log_is_off(conf):
    cfg = Config()
    cfg.set("access_log_format", conf.ACCESS_LOG_FORMAT)
    logger = conf.logger_class(cfg)
    seen = []
    logger.access_log.addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: seen.append(r)})())
    resp, environ, took = CASES[0]
    logger.access(resp, Req(), environ, took)
    assert seen == []
