"""The `gateway` command, run as a user runs it: a subprocess with DATABASE_URL set."""
import hashlib
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from gateway.extensions import make_engine
from gateway.store.models import api_keys


def run(args, url, check=True):
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True,
                          check=check, timeout=60)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, sqlite_url):
    return sqlite_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def test_db_upgrade_on_a_fresh_sqlite_file(tmp_path):
    out = run(["db", "upgrade"], f"sqlite:///{tmp_path}/fresh.db")
    assert "up to date" in out.stdout
    assert (tmp_path / "fresh.db").exists()


def test_keys_create_prints_the_key_alone_on_the_last_line_and_stores_its_hash(url):
    out = run(["keys", "create", "--name", "ci-bot", "--rate-limit", "30", "--no-cache", "--cache-ttl", "60"], url)
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("gw_") and " " not in key
    with make_engine(url).connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.key_hash == hashlib.sha256(key.encode()).hexdigest())).one()
    assert (row.name, row.rate_limit_per_minute, row.cache_enabled, row.cache_ttl_seconds) == ("ci-bot", 30, False, 60)


def test_keys_list_never_shows_a_key(url):
    key = run(["keys", "create", "--name", "lister"], url).stdout.strip().splitlines()[-1]
    listing = run(["keys", "list"], url).stdout
    assert key[:11] in listing and "lister" in listing
    assert key not in listing and key[11:] not in listing


def test_keys_revoke_by_prefix_and_by_id(url):
    key = run(["keys", "create", "--name", "a"], url).stdout.strip().splitlines()[-1]
    assert "revoked" in run(["keys", "revoke", key[:11]], url).stdout
    again = run(["keys", "revoke", key[:11]], url, check=False)
    assert again.returncode != 0 and "no active key" in again.stderr


def test_a_bad_setting_stops_the_command_naming_the_variable(sqlite_url):
    env = {**os.environ, "DATABASE_URL": sqlite_url, "GATEWAY_READ_TIMEOUT": "never"}
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "list"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "GATEWAY_READ_TIMEOUT" in out.stderr


def test_pricing_set_adds_a_current_row_and_keeps_history(url):
    import secrets as sec
    model = "cli-model-" + sec.token_hex(4)   # a model of this test's own: the database is shared
    run(["pricing", "set", model, "--input", "0.10", "--output", "0.40", "--provider", "openai"], url)
    run(["pricing", "set", model, "--input", "0.20", "--output", "0.80", "--cached-input", "0.1"], url, check=False)
    run(["pricing", "set", model, "--input", "0.20", "--output", "0.80", "--cached-input", "0.1",
         "--provider", "openai"], url)
    listing = run(["pricing", "list"], url).stdout
    line = next(line for line in listing.splitlines() if line.startswith(model + " "))
    assert "0.200000" in line and "0.800000" in line
    from gateway.store.models import model_pricing
    with make_engine(url).connect() as conn:
        rows = conn.execute(select(model_pricing).where(model_pricing.c.model == model)).all()
    assert len(rows) == 2   # the old row stays, so old log rows stay explained


def test_pricing_set_for_an_unknown_model_needs_a_provider(url):
    out = run(["pricing", "set", "mystery-1", "--input", "1", "--output", "2"], url, check=False)
    assert out.returncode != 0 and "--provider" in out.stderr
    run(["pricing", "set", "mystery-1", "--input", "1", "--output", "2", "--provider", "ollama"], url)


def test_report_prints_a_table(url):
    import datetime as dt
    import secrets as sec
    from gateway.store.models import gateway_logs
    provider = "prov-" + sec.token_hex(4)
    with make_engine(url).begin() as conn:
        conn.execute(gateway_logs.insert().values(
            request_id="req_cli_" + sec.token_hex(8), endpoint="/v1/chat/completions", model="m", provider=provider,
            status_code=200, cost_usd=1.5, latency_ms=10, created_at=dt.datetime.now(dt.timezone.utc)))
    out = run(["report", "--since", "7d", "--by", "provider"], url)
    assert out.returncode == 0 and provider in out.stdout
    bad = run(["report", "--since", "soon"], url, check=False)
    assert bad.returncode != 0 and "soon" in bad.stderr


def test_gateway_simulate_serves_on_the_port_it_is_given():
    import requests
    import time
    from tests.conftest import free_port
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "simulate", "--port", str(port), "--tokens", "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(100):
            try:
                resp = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", headers={"Authorization": "Bearer x"},
                                     json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                                     timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert resp.status_code == 200
        assert len(resp.json()["choices"][0]["message"]["content"].split()) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def one_line_refusal(out):
    """The command stopped with one line of its own, not a traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1 and lines[0].startswith("gateway: "), out.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("name", ["x" * 201, "", "   "])
def test_keys_create_refuses_a_name_the_column_cannot_hold_or_an_empty_one(url, name):
    # PostgreSQL refused 201 characters with a DataError traceback; SQLite stored it, and an empty name.
    line = one_line_refusal(run(["keys", "create", "--name", name], url, check=False))
    assert "--name" in line


@pytest.mark.parametrize("option,value", [("--rate-limit", str(2 ** 31)), ("--cache-ttl", str(2 ** 31))])
def test_keys_create_refuses_a_number_the_column_cannot_hold(url, option, value):
    line = one_line_refusal(run(["keys", "create", "--name", "big", option, value], url, check=False))
    assert option in line


@pytest.mark.parametrize("args,named", [
    (["gpt-4o", "--input", "1e13", "--output", "1"], "--input"),
    (["gpt-4o", "--input", "1", "--output", "1", "--cached-input", "1000000000000"], "--cached-input"),
    (["m" * 201, "--input", "1", "--output", "1", "--provider", "openai"], "model"),
    (["gpt-4o", "--input", "1", "--output", "1", "--provider", "p" * 101], "--provider"),
])
def test_pricing_set_refuses_what_the_columns_cannot_hold(url, args, named):
    # Numeric(18, 6) holds less than 10**12: PostgreSQL refused 1e13 with a numeric overflow traceback.
    line = one_line_refusal(run(["pricing", "set", *args], url, check=False))
    assert named in line


@pytest.mark.parametrize("command", [["keys", "list"], ["db", "upgrade"], ["report"]])
def test_an_unreachable_database_is_one_line_naming_where_without_the_password(command):
    out = run(command, "postgresql://gw:s3cretpw@127.0.0.1:1/gateway", check=False)
    line = one_line_refusal(out)
    assert "127.0.0.1:1" in line and "s3cretpw" not in out.stderr + out.stdout
