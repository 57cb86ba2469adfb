"""JSON in and out: orjson where it gives the same answer as the json module, the json module where it does not.

orjson refuses to write a string holding a lone UTF-16 surrogate. Such strings do reach us: a provider's JSON
may carry `"\\ud83d"` (half an emoji) as an escape, and the json module (which reads what orjson refuses) turns
it into a lone surrogate. The answer became a 500, a stream cut without its error event, a cache entry not
stored, a log batch refused. Each lone surrogate becomes U+FFFD instead, as decoders do with invalid UTF-8:
strict parsers (and PostgreSQL's text and jsonb) refuse the escape itself.

orjson also reads an integer past 64 bits as a float (its digits lost) and refuses to write one, and writes
nothing nested deeper than 254 levels; the json module does both exactly, so those go to it.
"""
import json
import re

import orjson

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # a valid pair is one character in a Python str
# A JSON number of 20 digits or more (2**64 has 20): where orjson would read a float. Inside a string the
# pattern only costs a slower, still exact, parse.
_BIG_INT = {str: re.compile(r"[:\[,]\s*-?\d{20}"), bytes: re.compile(rb"[:\[,]\s*-?\d{20}")}


def loads(data):
    """json.loads's answer for `data` (str or bytes), from orjson when orjson reads it the same."""
    if _BIG_INT[type(data)].search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # a lone surrogate escape, NaN, ...: JSON the json module reads, or not JSON at all
    return json.loads(data)


def dumps(obj, default=None, option=None):
    try:
        return orjson.dumps(obj, default=default, option=option)
    except orjson.JSONEncodeError as e:
        reason = str(e)
    if "surrogates" in reason:
        obj = _scrub(obj)
        try:
            return orjson.dumps(obj, default=default, option=option)
        except orjson.JSONEncodeError as e:
            reason = str(e)
    if "64-bit" not in reason and "Recursion" not in reason:
        raise TypeError(reason)
    sort_keys = bool(option and option & orjson.OPT_SORT_KEYS)
    return json.dumps(_scrub(obj), default=default, ensure_ascii=False, separators=(",", ":"),
                      sort_keys=sort_keys).encode()


def _scrub(obj):
    if isinstance(obj, str):
        return _LONE_SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_scrub(v) for v in obj]
    return obj
