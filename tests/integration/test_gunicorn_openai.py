"""The OpenAI path through a real gunicorn + gevent gateway and a local OpenAI-compatible upstream."""
import json
import time

import requests
from openai import OpenAI

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}


def test_a_completion_through_gunicorn(start_gateway, simulator):
    gw = start_gateway(simulator)
    resp = requests.post(gw.base_url + "/v1/chat/completions", json=CHAT, headers=gw.headers, timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert resp.headers["X-Provider"] == "openai"
    assert resp.headers["X-Request-Id"].startswith("req_")
    assert "X-Latency-Ms" in resp.headers


def test_a_stream_arrives_chunk_by_chunk(start_gateway, paced_simulator):
    gw = start_gateway(paced_simulator)
    arrivals, events = [], []
    started = time.monotonic()
    with requests.post(gw.base_url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=gw.headers,
                       stream=True, timeout=20) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith(b"data: "):
                arrivals.append(time.monotonic() - started)
                events.append(line[6:].decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    # 20 tokens at 40 per second: the first chunk must arrive long before the last.
    assert arrivals[-1] - arrivals[0] > 0.3


def test_the_openai_sdk_completes_a_chat_and_a_streamed_chat(start_gateway, simulator):
    gw = start_gateway(simulator)
    client = OpenAI(base_url=gw.base_url + "/v1", api_key=gw.key, max_retries=0)
    done = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"])
    assert done.choices[0].message.content and done.usage.total_tokens > 0
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"], stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == done.choices[0].message.content
    assert usage is not None and usage.completion_tokens > 0


def test_a_bad_key_gets_a_401_from_the_real_server(start_gateway, simulator):
    gw = start_gateway(simulator)
    resp = requests.post(gw.base_url + "/v1/chat/completions", json=CHAT,
                         headers={"Authorization": "Bearer gw_" + "x" * 43}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "invalid_api_key"


def test_workers_are_patched_by_gevent_before_ssl_is_loaded(start_gateway, simulator):
    gw = start_gateway(simulator)
    requests.post(gw.base_url + "/v1/chat/completions", json=CHAT, headers=gw.headers, timeout=10)
    assert "MonkeyPatchWarning" not in gw.log()
