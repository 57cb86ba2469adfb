"""The simulator's settings: one dataclass, filled from the command line or by the caller."""
import argparse
from dataclasses import dataclass

from .faults import FaultSyntaxError, parse_fault


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: int = 0          # before the response (non-stream) or the response headers (stream)
    tokens: int = 12             # words in the canonical reply
    tokens_per_second: float = 0  # stream pace; 0 = as fast as possible
    fault: str | None = None     # default fault for every request, same syntax as X-Sim-Fault
    seed: int = 0                # mixed into the canonical reply, so two simulators can disagree


def build_parser(prog="gateway simulate"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Provider simulator: speaks the OpenAI, Anthropic and Gemini wire formats locally.",
    )
    d = SimOptions()
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 = any free port (printed on stdout)")
    p.add_argument("--latency-ms", type=int, default=d.latency_ms, help="delay before the response / first byte")
    p.add_argument("--tokens", type=int, default=d.tokens, help="words in a reply (default %(default)s)")
    p.add_argument("--tokens-per-second", type=float, default=d.tokens_per_second,
                   help="stream pace; 0 = as fast as possible (default)")
    p.add_argument("--fault", default=d.fault,
                   help="default fault for every request, e.g. 'status:code=503' (see X-Sim-Fault)")
    p.add_argument("--seed", type=int, default=d.seed)
    return p


def options_from_args(argv=None, prog="gateway simulate"):
    parser = build_parser(prog)
    ns = parser.parse_args(argv)
    try:
        parse_fault(ns.fault)
    except FaultSyntaxError as exc:
        parser.error(f"--fault: {exc}")
    return SimOptions(host=ns.host, port=ns.port, latency_ms=ns.latency_ms, tokens=ns.tokens,
                      tokens_per_second=ns.tokens_per_second, fault=ns.fault, seed=ns.seed)
