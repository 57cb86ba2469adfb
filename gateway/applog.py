"""Structured JSON application logs, with the request id on every line. Never a key or a prompt:
messages are written by our code, which never formats either into them."""
import json
import logging
import time

from flask import g, has_request_context


class JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if has_request_context():
            rid = g.get("request_id")
            if rid:
                entry["request_id"] = rid
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level):
    """JSON lines on stderr for the gateway's loggers and the libraries under them (on the root
    logger, so test capture and any handler an operator adds still see every record)."""
    logging.getLogger("gateway").setLevel(level)
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)
