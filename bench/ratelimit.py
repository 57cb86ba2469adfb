"""The rate-limit check alone, against the real Redis (issue 5: under 1 ms p50): one Lua call per request."""
import os
import secrets
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.extensions import make_redis  # noqa: E402
from gateway.ratelimit import RateLimiter, RedisWindow  # noqa: E402

TARGET_MS = 1.0


def main(n=5000):
    client = make_redis(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"))
    namespace = f"gwbench:{secrets.token_hex(4)}:"
    limiter = RateLimiter(RedisWindow(client), namespace)
    try:
        for _ in range(200):
            limiter.check(1, 10_000_000)   # warm: the script is loaded, the connection open
        times = []
        for _ in range(n):
            started = time.perf_counter()
            limiter.check(1, 10_000_000)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p50, p99 = times[n // 2], times[int(n * 0.99)]
        met = "yes" if p50 <= TARGET_MS else "no"
        print(f"rate-limit check on Redis, {n} calls: p50 {p50:.3f} ms, p99 {p99:.3f} ms "
              f"(target p50 <= {TARGET_MS} ms: {met})")
    finally:
        keys = list(client.scan_iter(match=namespace + "*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
