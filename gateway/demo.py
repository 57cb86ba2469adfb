"""`make demo`: the simulator and the gateway on embedded defaults, and the OpenAI SDK showing what the
gateway does, in plain words. Stops what it started."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _say(title, text=""):
    print(f"\n== {title}")
    if text:
        print(text)


def _start(env, workdir):
    from gateway.simulator import spawn_process
    sim, sim_base = spawn_process(["--tokens", "16", "--tokens-per-second", "40"])
    port = _port()
    env.update({"OPENAI_BASE_URL": sim_base + "/v1", "ANTHROPIC_BASE_URL": sim_base, "GEMINI_BASE_URL": sim_base,
                "OPENAI_API_KEY": "sk-demo", "ANTHROPIC_API_KEY": "sk-ant-demo", "GEMINI_API_KEY": "demo",
                "PORT": str(port), "WEB_CONCURRENCY": "1", "GATEWAY_ACCESS_LOG": "", "GATEWAY_LOG_LEVEL": "WARNING"})
    subprocess.run([sys.executable, "-m", "gateway.cli", "db", "upgrade"], env=env, check=True, capture_output=True)
    log = open(os.path.join(workdir, "gateway.log"), "w")
    gw = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                          env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(base + "/healthz", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.1)
    return sim, sim_base, gw, base


def _key(env, *args):
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "keys", "create", *args], env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def _show(raw, label):
    r = raw.parse()
    h = raw.headers
    print(f"{label:<18} {r.model:<28} cost ${h.get('x-cost-usd')}  via {h.get('x-provider')}"
          f"  cache {h.get('x-cache-hit', '-')}  failover {h.get('x-failover')}")
    print(f"{'':<18} \"{r.choices[0].message.content}\"")
    return r


def run_script(base, key, limited_key, sim_base):
    from openai import OpenAI, RateLimitError
    client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
    chat = client.chat.completions.with_raw_response.create
    hello = [{"role": "user", "content": "Say hello in a few words."}]

    _say("One API, three providers (same code, only model= changes)")
    for model in ("gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"):
        _show(chat(model=model, messages=hello), model)

    _say("A stream from Claude, chunk by chunk")
    story = [{"role": "user", "content": "Tell me a very short story."}]
    stream = client.chat.completions.create(model="claude-haiku-4-5", messages=story, stream=True,
                                            stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        if chunk.usage:
            print(f"\n(usage: {chunk.usage.total_tokens} tokens, cost ${getattr(chunk, 'cost_usd', None)})")

    _say("A tool call from Gemini, in OpenAI's shape")
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    r = client.chat.completions.create(model="gemini-2.5-flash", tools=tools,
                                       messages=[{"role": "user", "content": "Weather in Paris?"}])
    call = r.choices[0].message.tool_calls[0]
    print(f"finish_reason={r.choices[0].finish_reason}  {call.function.name}({call.function.arguments})")

    _say("The same request twice: the second is a cache hit, free and fast")
    ask = [{"role": "user", "content": "What is a gateway?"}]
    _show(chat(model="gpt-4o-mini", messages=ask), "first")
    _show(chat(model="gpt-4o-mini", messages=ask), "again")

    _say("OpenAI has a bad minute (the simulator answers 503): Claude answers instead")
    requests.post(sim_base + "/_sim/rules", json={"rules": [{"provider": "openai", "fault": "status:code=503",
                                                               "times": 4}]}, timeout=5)
    _show(chat(model="gpt-4o-mini", messages=[{"role": "user", "content": "Are you there?"}],
               extra_headers={"Cache-Control": "no-cache"}), "gpt-4o-mini")
    requests.delete(sim_base + "/_sim/rules", timeout=5)

    _say("A key limited to 2 requests per minute, asked 3 times")
    limited = OpenAI(base_url=base + "/v1", api_key=limited_key, max_retries=0)
    for i in range(3):
        try:
            raw = limited.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=hello)
            print(f"request {i + 1}: 200, {raw.headers.get('x-ratelimit-remaining')} left this minute")
        except RateLimitError as e:
            print(f"request {i + 1}: 429 rate limited, retry after {e.response.headers.get('retry-after')} s: "
                  f"{e.body.get('message') if isinstance(e.body, dict) else e}")


def main():
    workdir = tempfile.mkdtemp(prefix="gateway-demo-")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"GATEWAY_INSTANCE_DIR": workdir, "PYTHONPATH": ROOT})
    sim = gw = None
    try:
        sim, sim_base, gw, base = _start(env, workdir)
        key = _key(env, "--name", "demo")
        limited = _key(env, "--name", "demo-limited", "--rate-limit", "2", "--no-cache")
        print(f"gateway on {base}, provider simulator on {sim_base}, data in {workdir}")
        run_script(base, key, limited, sim_base)
        print("\nDone. `gateway report` would now show these requests; see README.md.")
    finally:
        if gw is not None:
            os.killpg(gw.pid, signal.SIGTERM)
            gw.wait(timeout=30)
        if sim is not None:
            sim.terminate()
            sim.wait(timeout=10)


if __name__ == "__main__":
    main()
