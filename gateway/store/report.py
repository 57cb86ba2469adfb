"""Spend reports over gateway_logs: `gateway report --since 7d --by model`.

Counts, token and cost sums are grouped in SQL on both databases. Latency percentiles are
percentile_cont (linear interpolation between the two nearest rows, NULL latencies ignored): computed by
PostgreSQL itself, and on SQLite, which has no such aggregate, in Python from the group's sorted
latencies with the same formula. Spend is exact: PostgreSQL sums NUMERIC; SQLite stores NUMERIC as a
float, so it sums whole 1e-8 dollar units (each cost has 8 decimals) as integers.
"""
import datetime as dt
import math
import re
from decimal import Decimal

from sqlalchemy import Date, Integer, and_, case, cast, func, literal_column, not_, select

from gateway.store.models import api_keys, gateway_logs

TABLE = gateway_logs
GROUPS = ("model", "provider", "key", "customer", "feature", "day")
_COLUMNS = {"model": TABLE.c.model, "provider": TABLE.c.provider, "key": TABLE.c.api_key_id,
            "customer": TABLE.c.customer_id, "feature": TABLE.c.feature}
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_SINCE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.IGNORECASE)
_COST_UNITS = 100_000_000  # cost_usd has 8 decimals
_PLACES = Decimal("0.00000001")


def parse_since(value):
    """"7d", "24h", "30m" (or "2w") → timedelta. Raises ValueError with the accepted forms."""
    match = _SINCE.match(value or "")
    if not match:
        raise ValueError(f"invalid duration {value!r}: use a whole number followed by m (minutes), "
                         f"h (hours), d (days) or w (weeks), e.g. 30m, 24h, 7d")
    amount = int(match.group(1))
    if amount <= 0:
        raise ValueError(f"invalid duration {value!r}: it must be greater than zero")
    return dt.timedelta(**{_UNITS[match.group(2).lower()]: amount})


def percentile_cont(sorted_values, fraction):
    """PostgreSQL's percentile_cont, step for step (float8 arithmetic), on an ascending list."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    first_row, second_row = math.floor(position), math.ceil(position)
    first = float(sorted_values[first_row])
    if first_row == second_row:
        return first
    return first + (float(sorted_values[second_row]) - first) * (position - first_row)


def _group_expression(by, dialect):
    if by == "day":
        if dialect == "postgresql":
            return cast(func.timezone(literal_column("'UTC'"), TABLE.c.created_at), Date)
        return func.date(TABLE.c.created_at)  # SQLite keeps "YYYY-MM-DD HH:MM:SS" text, in UTC
    return _COLUMNS[by]


def _count_if(condition):
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def report(engine, since, by, until=None):
    """Per-group figures for requests logged in [until - since, until) (until defaults to now).

    `since`: a timedelta or a string for parse_since. `by`: one of GROUPS. Each dict holds the group
    value under the key `by` (for "key" also key_name and key_prefix; for "day" a date, UTC), then
    requests, prompt_tokens, completion_tokens, total_tokens, spend_usd (Decimal), avg/p50/p95_latency_ms
    (float, None without latencies), cache_hit_rate, failover_rate, error_rate (status >= 400) as
    fractions, the counts behind them (cache_hits, failovers, errors), and unpriced_requests: successful
    upstream requests logged without a cost (no price for the model), which spend_usd does not include.
    """
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by!r}: choose one of {', '.join(GROUPS)}")
    if isinstance(since, str):
        since = parse_since(since)
    if since <= dt.timedelta(0):
        raise ValueError("the period must be longer than zero")
    until = until or dt.datetime.now(dt.timezone.utc)
    # A naive `until` is UTC, like everything stored.
    until = until.replace(tzinfo=dt.timezone.utc) if until.tzinfo is None else until.astimezone(dt.timezone.utc)
    start = until - since

    dialect = engine.dialect.name
    group = _group_expression(by, dialect).label("grp")
    t = TABLE
    in_window = and_(t.c.created_at >= start, t.c.created_at < until)
    if dialect == "postgresql":
        spend = func.sum(t.c.cost_usd)
        percentiles = [func.percentile_cont(0.5).within_group(t.c.latency_ms).label("p50"),
                       func.percentile_cont(0.95).within_group(t.c.latency_ms).label("p95")]
    else:
        spend = func.sum(cast(func.round(t.c.cost_usd * literal_column(str(_COST_UNITS))), Integer))
        percentiles = []
    query = (select(
        group,
        func.count().label("requests"),
        func.coalesce(func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
        func.coalesce(func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
        func.coalesce(func.sum(t.c.total_tokens), 0).label("total_tokens"),
        spend.label("spend"),
        func.sum(t.c.latency_ms).label("latency_sum"),
        func.count(t.c.latency_ms).label("latency_count"),
        _count_if(t.c.cache_hit).label("cache_hits"),
        _count_if(t.c.failover_used).label("failovers"),
        _count_if(t.c.status_code >= 400).label("errors"),
        # Answers with tokens but no cost: not GET /v1/models (no tokens), which SDKs send on their own.
        _count_if(and_(t.c.cost_usd.is_(None), t.c.status_code < 400, not_(t.c.cache_hit),
                       t.c.prompt_tokens.is_not(None))).label("unpriced"),
        *percentiles,
    ).where(in_window).group_by(group))

    with engine.connect() as conn:
        groups = conn.execute(query).all()
        if dialect != "postgresql":
            latencies = {}
            for value, latency in conn.execute(
                    select(group, t.c.latency_ms).where(in_window, t.c.latency_ms.is_not(None))
                    .order_by(group, t.c.latency_ms)):
                latencies.setdefault(value, []).append(latency)
        keys = {}
        if by == "key":
            ids = [g.grp for g in groups if g.grp is not None]
            if ids:
                keys = {k.id: k for k in conn.execute(
                    select(api_keys.c.id, api_keys.c.name, api_keys.c.key_prefix).where(api_keys.c.id.in_(ids)))}

    rows = []
    for g in groups:
        if dialect == "postgresql":
            spend_usd = Decimal(g.spend or 0)
            p50 = None if g.p50 is None else float(g.p50)
            p95 = None if g.p95 is None else float(g.p95)
        else:
            spend_usd = Decimal(g.spend or 0).scaleb(-8)
            values = latencies.get(g.grp, [])
            p50, p95 = percentile_cont(values, 0.5), percentile_cont(values, 0.95)
        value = g.grp
        if by == "day" and isinstance(value, str):
            value = dt.date.fromisoformat(value)
        row = {by: value}
        if by == "key":
            key = keys.get(value)
            row["key_name"] = key.name if key else None
            row["key_prefix"] = key.key_prefix if key else None
        requests = g.requests
        row.update(
            requests=requests,
            prompt_tokens=int(g.prompt_tokens),
            completion_tokens=int(g.completion_tokens),
            total_tokens=int(g.total_tokens),
            spend_usd=spend_usd.quantize(_PLACES),
            avg_latency_ms=int(g.latency_sum) / g.latency_count if g.latency_count else None,
            p50_latency_ms=p50,
            p95_latency_ms=p95,
            cache_hit_rate=int(g.cache_hits) / requests,
            failover_rate=int(g.failovers) / requests,
            error_rate=int(g.errors) / requests,
            cache_hits=int(g.cache_hits),
            failovers=int(g.failovers),
            errors=int(g.errors),
            unpriced_requests=int(g.unpriced),
        )
        rows.append(row)
    if by == "day":
        rows.sort(key=lambda r: r["day"])
    else:
        rows.sort(key=lambda r: (-r["spend_usd"], -r["requests"], str(r[by])))
    return rows


def _label(row, by):
    value = row[by]
    if by == "key":
        if value is None:
            return "(no key)"
        if row.get("key_name") is None:
            return f"#{value} (deleted)"
        return f"{row['key_name']} ({row['key_prefix']})"
    if value is None:
        return "(none)"
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def _ms(value):
    return "" if value is None else f"{value:,.0f}"


def _pct(count, total):
    return f"{100 * count / total:.1f}%" if total else ""


def format_table(rows, by):
    """A plain-text table of report() rows, with a total line."""
    if not rows:
        return "No requests in this period."
    header = [by, "requests", "prompt tok", "compl. tok", "total tok", "spend USD", "avg ms", "p50 ms",
              "p95 ms", "cache", "failover", "errors"]
    lines = []
    for r in rows:
        lines.append([_label(r, by), f"{r['requests']:,}", f"{r['prompt_tokens']:,}",
                      f"{r['completion_tokens']:,}", f"{r['total_tokens']:,}", f"{r['spend_usd']:,.6f}",
                      _ms(r["avg_latency_ms"]), _ms(r["p50_latency_ms"]), _ms(r["p95_latency_ms"]),
                      _pct(r["cache_hits"], r["requests"]), _pct(r["failovers"], r["requests"]),
                      _pct(r["errors"], r["requests"])])
    requests = sum(r["requests"] for r in rows)
    total = ["TOTAL", f"{requests:,}"] + [f"{sum(r[k] for r in rows):,}"
                                         for k in ("prompt_tokens", "completion_tokens", "total_tokens")]
    total += [f"{sum((r['spend_usd'] for r in rows), Decimal(0)):,.6f}", "", "", ""]
    total += [_pct(sum(r[k] for r in rows), requests) for k in ("cache_hits", "failovers", "errors")]
    widths = [max(len(line[i]) for line in [header, total, *lines]) for i in range(len(header))]

    def render(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    unpriced = sum(r["unpriced_requests"] for r in rows)
    out = [render(header), rule, *(render(line) for line in lines), rule, render(total)]
    if unpriced:
        out.append(f"\n{unpriced:,} successful request(s) had no price for their model: "
                   "spend excludes them (see `gateway pricing list`).")
    return "\n".join(out)
