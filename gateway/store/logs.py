"""The gateway_logs table as the log writer fills it: a row made complete and typed for its columns
(`normalize`), rows inserted idempotently (`insert_ignoring_duplicates`), and a failed insert told apart
as the row's fault or the database's (`_is_bad_data`).
"""
import datetime as dt
import decimal
import json
import math
from decimal import Decimal

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, Numeric, String
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError

from gateway.jsonbytes import dumps
from gateway.store.models import gateway_logs
from gateway.turns import take_turn

TABLE = gateway_logs
COLUMNS = list(TABLE.columns)
COLUMN_NAMES = frozenset(str(c.name) for c in COLUMNS)
# Rows per statement. SQLite caps placeholders per statement (32766: 1,365 rows of 24 columns); on PostgreSQL a
# batch travels as JSON parameters of at most _MAX_JSON_BYTES each (1,000 plain rows are ~300 KB and one
# statement, one round trip; rows with GATEWAY_LOG_BODIES can be megabytes each), the worker yielding between
# statements.
_MAX_ROWS_PER_STATEMENT = 1000
_MAX_JSON_BYTES = 1 << 20
_SQLITE_INSERT = sqlite.insert(TABLE).on_conflict_do_nothing(index_elements=["request_id"])
_JSON_INSERT_SQL = {}  # (dialect name, ON CONFLICT or not) -> INSERT ... SELECT FROM json_populate_recordset
_UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def _kind(column):
    t = column.type
    for kind, types in (("datetime", DateTime), ("decimal", Numeric), ("bool", Boolean),
                        ("int", Integer), ("str", String)):
        if isinstance(t, types):
            return kind
    raise TypeError(f"gateway_logs.{column.name}: unexpected type {t!r}")


# Plain str keys: a Core column's name is a str subclass (quoted_name), which orjson refuses as a key.
_KINDS = {str(c.name): _kind(c) for c in COLUMNS}  # Text is a String, BigInteger an Integer
_LENGTHS = {c.name: c.type.length for c in COLUMNS if _KINDS[c.name] == "str" and c.type.length}
_SCALES = {c.name: Decimal(1).scaleb(-c.type.scale) for c in COLUMNS if _KINDS[c.name] == "decimal"}
# What each integer column holds on PostgreSQL (integer or bigint); SQLite's limit is bigint's. A value beyond it
# (an upstream's usage of 1e300 tokens) would fail the insert of its whole batch.
_INT_BOUNDS = {c.name: 2 ** (63 if isinstance(c.type, BigInteger) else 31) for c in COLUMNS if _KINDS[c.name] == "int"}
_BOOLS = tuple(name for name, kind in _KINDS.items() if kind == "bool")
_ALL_NULL = dict.fromkeys(_KINDS)  # SQLite's executemany needs every row to name every column


class BadRow(ValueError):
    """A row that no retry can store (an unknown column, a value that is not of its column's type)."""


def _text(name, value):
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    elif isinstance(value, (list, dict)):  # e.g. `attempts`, a JSON list stored as text
        value = json.dumps(value, separators=(",", ":"))
    elif not isinstance(value, str):
        value = str(value)
    # PostgreSQL text cannot hold NUL, and UTF-8 cannot hold lone surrogates (both can arrive in a
    # client's JSON): a row must not be refused for a character.
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    limit = _LENGTHS.get(name)
    if limit and len(value) > limit:
        if name == "request_id":
            raise BadRow(f"request_id longer than {limit} characters")
        value = value[:limit]  # a client's over-long model name must not cost the row
    return value


def _coerce(name, kind, value):
    if kind == "str":
        return _text(name, value)
    if kind == "datetime":
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        if not isinstance(value, dt.datetime):
            raise BadRow(f"{name}: expected a datetime, got {type(value).__name__}")
        # Naive means UTC; SQLite keeps no offset, so everything is stored as UTC.
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    if kind == "decimal":
        if isinstance(value, bool):
            raise BadRow(f"{name}: expected a number, got a bool")
        try:
            value = value if isinstance(value, Decimal) else Decimal(str(value))
        except decimal.InvalidOperation:
            raise BadRow(f"{name}: {value!r} is not a number") from None
        if not value.is_finite():
            raise BadRow(f"{name}: {value!r} is not finite")
        # What the column keeps (PostgreSQL would round anyway): the spool then holds what the
        # database holds, on SQLite too.
        return value.quantize(_SCALES[name], rounding=decimal.ROUND_HALF_UP)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise BadRow(f"{name}: expected a bool, got {value!r}")
    # int
    if isinstance(value, float):
        if not math.isfinite(value):
            raise BadRow(f"{name}: {value!r} is not finite")
        value = round(value)  # e.g. a latency computed in float milliseconds
    elif isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise BadRow(f"{name}: expected an int, got {type(value).__name__}")
    try:
        value = int(value)
    except (ValueError, decimal.InvalidOperation):
        raise BadRow(f"{name}: {value!r} is not an int") from None
    if not -_INT_BOUNDS[name] <= value < _INT_BOUNDS[name]:
        raise BadRow(f"{name}: {value} is out of the column's range")
    return value


def _check(name):
    """The function `normalize` calls for a value of column `name`: the value as it is when it already is what
    `_coerce` would return, which the request path's values are (checked with as few steps as can tell), else
    `_coerce`'s. One closure a column, chosen here once: in the worker, 4.6 -> 2.9 µs a row."""
    kind, limit = _KINDS[name], _LENGTHS.get(name)
    if kind == "str":
        limit = limit or float("inf")

        def check(value):
            # ASCII: no UTF-8 check needed beyond the NUL itself
            if type(value) is str and value.isascii() and "\x00" not in value and len(value) <= limit:
                return value
            return _text(name, value)
    elif kind == "int":
        low, high = -_INT_BOUNDS[name], _INT_BOUNDS[name]

        def check(value):
            return value if type(value) is int and low <= value < high else _coerce(name, kind, value)
    elif kind == "bool":
        def check(value):
            return value if type(value) is bool else _coerce(name, kind, value)
    elif kind == "datetime":
        def check(value):
            if type(value) is dt.datetime and value.tzinfo is dt.timezone.utc:
                return value
            return _coerce(name, kind, value)
    else:
        def check(value):
            return _coerce(name, kind, value)
    return check


_CHECKS = {name: _check(name) for name in _KINDS}


def normalize(row):
    """`row` made a row for gateway_logs, in place, and returned: each value of its column's type, booleans
    defaulting to False, timestamps in UTC. A column with no value is left out: the database stores NULL for it.
    (A request's row has ~8 such columns of 24; on PostgreSQL each is JSON the server would read for nothing:
    51 -> 44 µs a row.) Raises BadRow, leaving the row part-normalized.

    In place: a row waits in the queue for its batch, up to the flush interval, and each further dict made for it
    (a copy on the way in, another here) is one more ~1 KB block that outlives the requests around it. Without
    the two, logging cost the workers 20-32 µs less CPU a request at saturation (two interleaved A/Bs, c=64), far
    more than the copying itself (~1 µs). Why is not established: queueing rows as tuples, or as JSON bytes,
    gained nothing over this."""
    checks = _CHECKS
    empty = None
    try:
        for name, value in row.items():
            if value is None:
                if empty is None:
                    empty = []
                empty.append(name)
            else:
                checked = checks[name](value)
                if checked is not value:
                    row[name] = checked
    except KeyError:
        unknown = row.keys() - COLUMN_NAMES
        if not unknown:
            raise
        raise BadRow(f"unknown columns: {', '.join(sorted(unknown))}") from None
    if empty:
        for name in empty:
            del row[name]
    for name in _BOOLS:
        if name not in row:
            row[name] = False
    if "created_at" not in row:
        row["created_at"] = dt.datetime.now(dt.timezone.utc)
    return row


def insert_ignoring_duplicates(engine, rows, new=False):
    """Insert normalized rows, skipping request_ids already stored; returns the number inserted.

    At most `_MAX_ROWS_PER_STATEMENT` rows per statement, all in one transaction. On PostgreSQL the rows go as
    a JSON array (at most `_MAX_JSON_BYTES`, unless one row is larger) that the server expands into the table's
    row type (`json_populate_recordset`): the worker writes it with orjson (~2 µs a row) where binding every
    value as a parameter had psycopg2 quote 24 values a row (~25 µs), in the worker's event loop; SQLAlchemy's
    compiled `.values(rows)` cost more still, and an executemany() of ON CONFLICT is sent by psycopg2 as one
    statement per row. SQLite runs in process, so there executemany() of one cached statement is the cheap way.

    `new`: rows never offered to the database before, as a live batch's are (the gateway makes each request_id
    afresh; a batch that may have been stored goes to the spool, whose replay passes new=False). On PostgreSQL
    they are sent as a plain INSERT: ON CONFLICT checks the unique index and inserts each row speculatively,
    which cost PostgreSQL 12.5 µs a row here where a plain insert cost 10.2 (batches of 200). Should one of them
    be stored after all, the unique violation undoes the transaction and the batch is inserted again, skipping
    duplicates.
    """
    name = engine.dialect.name
    if name == "postgresql":
        if new:
            try:
                return _insert_json(engine, rows, conflicts=False)
            except IntegrityError as e:
                if getattr(e.orig, "pgcode", None) != _UNIQUE_VIOLATION:
                    raise
        return _insert_json(engine, rows, conflicts=True)
    if name != "sqlite":
        raise NotImplementedError(f"log writer: unsupported database {name!r}")
    inserted = 0
    with engine.begin() as conn:
        for start in range(0, len(rows), _MAX_ROWS_PER_STATEMENT):
            batch = [{**_ALL_NULL, **row} for row in rows[start:start + _MAX_ROWS_PER_STATEMENT]]
            inserted += conn.execute(_SQLITE_INSERT, batch).rowcount
    return inserted


def _insert_json(engine, rows, conflicts):
    sql = _json_insert_sql(engine.dialect, conflicts)
    inserted = 0
    with engine.begin() as conn:
        for i, array in enumerate(_json_arrays(rows)):
            if i:
                take_turn()  # under gevent the writer is a greenlet: requests run between statements
            inserted += conn.exec_driver_sql(sql, (array,)).rowcount
    return inserted


def _json_insert_sql(dialect, conflicts):
    sql = _JSON_INSERT_SQL.get((dialect.name, conflicts))
    if sql is None:
        quote = dialect.identifier_preparer.quote
        table, columns = quote(TABLE.name), ", ".join(quote(c.name) for c in COLUMNS)
        sql = (f"INSERT INTO {table} ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::{table}, %s::json)"
               + (f" ON CONFLICT ({quote('request_id')}) DO NOTHING" if conflicts else ""))
        _JSON_INSERT_SQL[(dialect.name, conflicts)] = sql
    return sql


def _decimal_as_text(value):
    if isinstance(value, Decimal):
        return str(value)  # exact: numeric's input reads the text, never a float
    raise TypeError(f"{type(value).__name__} is not a gateway_logs value")


def _json_arrays(rows):
    """Normalized rows as JSON arrays (text) of at most _MAX_ROWS_PER_STATEMENT rows and, unless a single row
    is larger, _MAX_JSON_BYTES: timestamps as RFC 3339 with their offset, decimals as text."""
    parts, size = [], 0
    for row in rows:
        part = dumps(row, default=_decimal_as_text)
        if parts and (size + len(part) > _MAX_JSON_BYTES or len(parts) == _MAX_ROWS_PER_STATEMENT):
            yield (b"[" + b",".join(parts) + b"]").decode()
            parts, size = [], 0
        parts.append(part)
        size += len(part) + 1
    if parts:
        yield (b"[" + b",".join(parts) + b"]").decode()


def _is_bad_data(exc):
    """The database is fine but refuses a row: retrying the same row can never succeed.

    Anything else (unreachable, timed out, a missing table during a deploy) may heal, so those rows
    are spooled and retried rather than set aside.
    """
    if isinstance(exc, (OperationalError, InterfaceError)) or getattr(exc, "connection_invalidated", False):
        return False
    if isinstance(exc, (IntegrityError, DataError)):  # NOT NULL, value out of range
        return True
    if isinstance(exc, OverflowError):  # sqlite3: "Python int too large to convert to SQLite INTEGER"
        return True
    # The driver refusing a value before sending it (psycopg2 raises these unwrapped).
    return isinstance(exc, (ValueError, TypeError)) and not isinstance(exc, SQLAlchemyError)
