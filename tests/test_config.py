import pytest

from gateway.config import ConfigError, load


def test_defaults_need_nothing_set(tmp_path):
    s = load({"GATEWAY_INSTANCE_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path}/gateway.db"
    assert s.redis_url is None
    assert s.base_urls == {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com",
                           "gemini": "https://generativelanguage.googleapis.com"}
    assert (s.port, s.connect_timeout, s.read_timeout, s.first_token_timeout, s.deadline) == (8080, 5, 120, 60, 600)
    assert s.answer_timeout == 300
    assert s.max_request_bytes == 10 * 1024 * 1024


def test_heroku_postgres_url_is_accepted():
    s = load({"DATABASE_URL": "postgres://u:p@db.example:5432/app"})
    assert s.database_url == "postgresql+psycopg2://u:p@db.example:5432/app"


def test_google_api_key_is_an_alias_for_gemini():
    assert load({"GOOGLE_API_KEY": "g"}).provider_key("gemini") == "g"
    assert load({"GOOGLE_API_KEY": "g", "GEMINI_API_KEY": "x"}).provider_key("gemini") == "x"


def test_base_url_trailing_slash_is_dropped():
    assert load({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1/"}).base_urls["openai"] == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("name,value", [
    ("PORT", "eighty"), ("GATEWAY_READ_TIMEOUT", "-1"), ("GATEWAY_DEADLINE", "soon"),
    ("GATEWAY_MAX_REQUEST_BYTES", "12"), ("OPENAI_BASE_URL", "ftp://x"), ("REDIS_URL", "localhost:6379"),
    ("DATABASE_URL", "mysql://x/y"), ("WEB_CONCURRENCY", "0"), ("GATEWAY_CONFIG", "/nonexistent.toml"),
    ("GATEWAY_CACHE_NEAR_SECONDS", "-0.5"), ("GATEWAY_READ_TIMEOUT", "0"),
])
def test_a_bad_value_names_its_variable(name, value):
    with pytest.raises(ConfigError) as e:
        load({name: value})
    assert name in str(e.value)


def test_a_bad_config_file_is_named(tmp_path):
    f = tmp_path / "gw.toml"
    f.write_text("[models\n")
    with pytest.raises(ConfigError) as e:
        load({"GATEWAY_CONFIG": str(f)})
    assert "GATEWAY_CONFIG" in str(e.value)


def test_provider_keys_are_not_in_the_repr():
    s = load({"OPENAI_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(s)


def test_the_upstream_pool_is_as_large_as_a_workers_concurrency():
    assert load({}).upstream_pool_size == 4000
    assert load({"GATEWAY_WORKER_CONNECTIONS": "1500"}).upstream_pool_size == 1500
    assert load({"GATEWAY_WORKER_CONNECTIONS": "1500", "GATEWAY_UPSTREAM_POOL_SIZE": "64"}).upstream_pool_size == 64


@pytest.mark.parametrize("raw,seconds", [(None, 1.0), ("0", 0.0), ("2.5", 2.5)])
def test_the_near_tier_is_a_second_by_default_and_zero_turns_it_off(raw, seconds):
    assert load({} if raw is None else {"GATEWAY_CACHE_NEAR_SECONDS": raw}).cache_near_seconds == seconds


SECONDS_SETTINGS = ["GATEWAY_CONNECT_TIMEOUT", "GATEWAY_READ_TIMEOUT", "GATEWAY_ANSWER_TIMEOUT",
                    "GATEWAY_FIRST_TOKEN_TIMEOUT", "GATEWAY_DEADLINE", "GATEWAY_UPSTREAM_IDLE_SECONDS",
                    "GATEWAY_KEY_CACHE_SECONDS", "GATEWAY_RETRY_AFTER_CAP", "GATEWAY_RETRY_BACKOFF",
                    "GATEWAY_BREAKER_COOLDOWN", "GATEWAY_LOG_FLUSH_SECONDS", "GATEWAY_CACHE_NEAR_SECONDS"]


@pytest.mark.parametrize("name", SECONDS_SETTINGS)
@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_nan_seconds_stop_start_up_naming_the_variable(name, value):
    # float() takes "nan", which slips past every range check (a NaN key cache never expires).
    with pytest.raises(ConfigError) as e:
        load({name: value})
    assert name in str(e.value) and value in str(e.value)


@pytest.mark.parametrize("name", [n for n in SECONDS_SETTINGS if n != "GATEWAY_UPSTREAM_IDLE_SECONDS"])
@pytest.mark.parametrize("value", ["inf", "Infinity", "+inf"])
def test_infinite_seconds_stop_start_up_unless_documented(name, value):
    with pytest.raises(ConfigError) as e:
        load({name: value})
    assert name in str(e.value)


def test_idle_upstream_connections_may_be_kept_forever_as_the_readme_says_but_not_nan():
    assert load({"GATEWAY_UPSTREAM_IDLE_SECONDS": "inf"}).upstream_idle_seconds == float("inf")
    with pytest.raises(ConfigError):
        load({"GATEWAY_UPSTREAM_IDLE_SECONDS": "nan"})



@pytest.mark.parametrize("name,value", [
    ("REDIS_URL", "redis//:s3cretpw@redis.internal:6379/0"),     # the auditor's typo
    ("REDIS_URL", "http://:s3cretpw@redis.internal:6379/0"),
    ("REDIS_URL", "s3cretpw@redis.internal:6379"),
    ("DATABASE_URL", "s3cretpw@db.internal/app"),
    ("OPENAI_BASE_URL", "ftp://user:s3cretpw@proxy.internal/v1"),
    ("OPENAI_BASE_URL", "user:s3cretpw@proxy.internal/v1"),
])
def test_a_bad_url_is_named_without_echoing_its_password(name, value):
    with pytest.raises(ConfigError) as e:
        load({name: value})
    assert name in str(e.value) and "s3cretpw" not in str(e.value)


def test_a_bad_url_names_its_scheme():
    with pytest.raises(ConfigError) as e:
        load({"REDIS_URL": "http://:s3cretpw@redis.internal:6379/0"})
    assert "'http'" in str(e.value)


def test_an_unknown_log_level_stops_start_up_naming_the_variable():
    with pytest.raises(ConfigError) as e:
        load({"GATEWAY_LOG_LEVEL": "LOUD"})
    assert "GATEWAY_LOG_LEVEL" in str(e.value) and "LOUD" in str(e.value)
    assert load({"GATEWAY_LOG_LEVEL": " warning "}).log_level == "WARNING"
