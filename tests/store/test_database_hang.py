"""PostgreSQL that stops answering (a network partition: packets vanish, nothing is refused), under gevent as
in a gunicorn worker. Each scenario runs in a process of its own (tests/store/hang_scenarios.py) through a
black-hole proxy; the bounds here are generous: these are fault tests, not speed tests."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def scenario(name, pg_url, tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.store.hang_scenarios", name, pg_url, str(tmp_path / "spool")],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert "hung" not in out, f"hung in step {out['hung']!r}: {out}"
    return out


def test_a_hung_call_is_cut_short_and_its_connection_never_reused(pg_url, tmp_path):
    out = scenario("engine", pg_url, tmp_path)
    assert out["pooled_error"] == "DatabaseTimeout" and out["pooled_seconds"] < 5
    assert out["invalidated"] == ["Timeout"]          # interrupted mid-protocol: thrown away, not pooled
    # libpq's connect_timeout does not work on psycogreen's asynchronous connect; the engine enforces it.
    assert out["connect_error"] == "OperationalError" and out["connect_seconds"] < 10
    assert out["after_resume"] == 42 and out["new_backend"]


def test_a_confirmed_key_keeps_working_and_an_unseen_one_is_refused_quickly(pg_url, tmp_path):
    out = scenario("keys", pg_url, tmp_path)
    assert out["confirmed_results"] == [True] * 4
    assert max(out["confirmed_seconds"]) < 5          # the look-up bound is 2 s
    assert out["unseen_result"] == "KeyStoreUnavailable" and out["unseen_seconds"] < 5
    assert out["revoked_after_resume"]                # the outage kept no key valid once the database answers


def test_prices_that_cannot_be_loaded_do_not_hold_the_request(pg_url, tmp_path):
    out = scenario("prices", pg_url, tmp_path)
    assert out["first_load_result"] is None and out["first_load_seconds"] < 5


def test_readyz_answers_503_while_the_database_hangs(pg_url, tmp_path):
    out = scenario("readyz", pg_url, tmp_path)
    assert out["before"] == 200
    assert out["status"] == 503 and out["seconds"] < 5 and out["database"] == "down: DatabaseTimeout"
    assert out["after"] == 200


def test_the_log_writer_spools_while_the_database_hangs_and_replays_once(pg_url, tmp_path):
    out = scenario("logwriter", pg_url, tmp_path)
    assert out["spooled"] == 5 and out["spooled_after"] < 10   # bounds here: 1.5 s per insert, 0.5 s per probe
    assert out["in_memory"] == 0
    assert out["stored"] == {request_id: 1 for request_id in out["ids"]}
    assert out["replayed_after"] < 20 and out["spool_files_left"] == []

