"""JSON out, as bytes: orjson, which refuses a string holding a lone UTF-16 surrogate.

Such strings do reach us: a provider's JSON may carry `"\\ud83d"` (half an emoji) as an escape, and Python's
json (which reads the stream events and what orjson refuses) turns it into a lone surrogate. orjson then raises,
and the answer became a 500, a stream cut without its error event, a cache entry not stored, a log batch
refused. Each lone surrogate becomes U+FFFD instead, as decoders do with invalid UTF-8: strict parsers (and
PostgreSQL's text and jsonb) refuse the escape itself.
"""
import re

import orjson

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a valid pair is one character in a Python str


def dumps(obj, default=None, option=None):
    try:
        return orjson.dumps(obj, default=default, option=option)
    except orjson.JSONEncodeError as e:
        if "surrogates" not in str(e):
            raise
        return orjson.dumps(_scrub(obj), default=default, option=option)


def _scrub(obj):
    if isinstance(obj, str):
        return _LONE_SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj
