import logging

import pytest

from gateway import config, startup


def test_missing_provider_keys_are_each_warned_about(sqlite_url, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway"):
        startup.check(config.load({"DATABASE_URL": sqlite_url, "OPENAI_API_KEY": "sk-x"}))
    text = caplog.text
    assert "ANTHROPIC_API_KEY" in text and "GEMINI_API_KEY" in text and "OPENAI_API_KEY" not in text


def test_an_unmigrated_database_stops_start_up_with_the_command_to_run(tmp_path):
    with pytest.raises(startup.NotReady) as e:
        startup.check(config.load({"DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}))
    assert "gateway db upgrade" in str(e.value)


def test_an_unreachable_redis_or_database_is_a_warning_not_a_stop(caplog):
    env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "REDIS_URL": "redis://127.0.0.1:1/0"}
    with caplog.at_level(logging.WARNING, logger="gateway"):
        startup.check(config.load(env))
    assert "database is not reachable" in caplog.text and "Redis is not reachable" in caplog.text


def test_several_workers_without_redis_are_warned_about(sqlite_url, caplog):
    with caplog.at_level(logging.WARNING, logger="gateway"):
        startup.check(config.load({"DATABASE_URL": sqlite_url, "WEB_CONCURRENCY": "3"}))
    assert "REDIS_URL" in caplog.text and "3 times its limit" in caplog.text


def test_one_worker_by_default_without_redis_two_with_it():
    assert config.load({}).web_concurrency == 1
    assert config.load({"REDIS_URL": "redis://127.0.0.1:6379/0"}).web_concurrency == 2
