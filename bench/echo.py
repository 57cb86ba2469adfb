"""The bench's yardstick: a bare Flask app under gunicorn with 2 gevent workers, answering a chat request with a
fixed chat.completion. What the machine makes of the simplest Flask + gevent JSON service right now: the issue's
own reference point ("a bare Flask + gevent JSON echo does about 2,000-3,000 here"), measured in the same run, so
that a slow machine can be told apart from a slow gateway."""
from flask import Flask, jsonify, request

app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return "ok"


@app.post("/v1/chat/completions")
def echo():
    body = request.get_json()
    return jsonify({"id": "chatcmpl-echo", "object": "chat.completion", "created": 0, "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Hello."}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
