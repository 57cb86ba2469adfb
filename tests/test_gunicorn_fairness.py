"""gunicorn.conf.py: a request that never gave the event loop a turn yields once at its end, so one busy
keep-alive client cannot hold a worker; a request that waited (an upstream call) is not slowed further."""
import importlib.util
import os

import gevent
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def conf(monkeypatch):
    from gevent import monkey
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: True)  # as in a gevent worker
    monkeypatch.setenv("PORT", "0")
    spec = importlib.util.spec_from_file_location("gunicorn_conf_under_test", os.path.join(ROOT, "gunicorn.conf.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Req:
    pass


def served(conf, handler):
    """Run pre_request, the handler and post_request in a greenlet; return the order things ran in."""
    order = []

    def request():
        req = Req()
        conf.pre_request(None, req)
        handler()
        conf.post_request(None, req, {}, None)
        order.append("request finished")

    def other_client():
        order.append("other client served")

    g = gevent.spawn(request)
    gevent.spawn(other_client)
    g.join()
    gevent.sleep(0)
    return order


def test_a_request_that_never_yielded_lets_other_clients_run_before_it_finishes(conf):
    assert served(conf, lambda: None) == ["other client served", "request finished"]


def test_a_request_that_waited_is_not_held_back_again(conf):
    order = served(conf, lambda: gevent.sleep(0.01))
    assert order == ["other client served", "request finished"]  # it yielded while waiting...
    calls = []
    real = gevent.sleep
    try:
        gevent.sleep = lambda s=0: calls.append(s) or real(s)
        req = Req()
        conf.pre_request(None, req)
        real(0.01)
        conf.post_request(None, req, {}, None)
    finally:
        gevent.sleep = real
    assert calls == []  # ...and post_request added no extra turn


def test_loop_clock_moves_only_when_the_loop_runs(conf):
    before = conf._loop_now()
    assert conf._loop_now() == before
    gevent.sleep(0.001)
    assert conf._loop_now() != before


def test_outside_a_gevent_worker_nothing_is_balanced(conf, monkeypatch):
    from gevent import monkey
    monkeypatch.setattr(monkey, "is_module_patched", lambda name: False)  # a sync or gthread worker
    assert conf._loop_now() is None
    assert served(conf, lambda: None) == ["request finished", "other client served"]
