"""Between a whole `chat.completion` and a stream of chunks, both ways, for the cache:
a streamed miss is accumulated into the entry it stores, a streamed hit is replayed from it."""
from gateway.translate.common import chunk, usage_chunk


class Accumulator:
    """Folds OpenAI chunks (choice 0..n) into the `chat.completion` they add up to."""

    def __init__(self):
        self.id = self.model = self.created = None
        self.system_fingerprint = None
        self.choices = {}

    def add(self, c):
        if self.id is None:
            self.id, self.model, self.created = c.get("id"), c.get("model"), c.get("created")
            self.system_fingerprint = c.get("system_fingerprint")
        for ch in c.get("choices") or ():
            slot = self.choices.setdefault(ch.get("index", 0), {"content": [], "tools": {}, "finish": None,
                                                                 "refusal": None})
            delta = ch.get("delta") or {}
            if delta.get("content"):
                slot["content"].append(delta["content"])
            if delta.get("refusal"):
                slot["refusal"] = (slot["refusal"] or "") + delta["refusal"]
            for tc in delta.get("tool_calls") or ():
                call = slot["tools"].setdefault(tc.get("index", 0), {"id": None, "name": "", "arguments": []})
                call["id"] = tc.get("id") or call["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call["name"] = fn["name"]
                if fn.get("arguments"):
                    call["arguments"].append(fn["arguments"])
            if ch.get("finish_reason"):
                slot["finish"] = ch["finish_reason"]

    def completion(self, usage):
        choices = []
        for index in sorted(self.choices):
            slot = self.choices[index]
            message = {"role": "assistant", "content": "".join(slot["content"]) or None, "refusal": slot["refusal"]}
            if slot["tools"]:
                message["tool_calls"] = [
                    {"id": t["id"], "type": "function", "function": {"name": t["name"], "arguments": "".join(t["arguments"])}}
                    for _, t in sorted(slot["tools"].items())]
            elif message["content"] is None and not slot["refusal"]:
                message["content"] = ""  # a refusal keeps content null, as OpenAI sends it
            choices.append({"index": index, "message": message, "logprobs": None, "finish_reason": slot["finish"]})
        body = {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": choices, "usage": usage}
        if self.system_fingerprint:
            body["system_fingerprint"] = self.system_fingerprint
        return body

    @property
    def complete(self):
        return bool(self.choices) and all(s["finish"] for s in self.choices.values())


def replay(completion, id_, created, include_usage):
    """The chunks a live stream of `completion` would have been: role, content, refusal, tool calls, finish,
    usage."""
    model = completion.get("model")
    out = []
    for choice in completion.get("choices") or ():
        i = choice.get("index", 0)
        message = choice.get("message") or {}
        calls, refusal = message.get("tool_calls") or [], message.get("refusal")
        empty = "" if not calls and not (refusal and not message.get("content")) else None
        out.append(chunk(id_, created, model, {"role": "assistant", "content": empty}, None, i))
        if message.get("content"):
            out.append(chunk(id_, created, model, {"content": message["content"]}, None, i))
        if refusal:
            out.append(chunk(id_, created, model, {"refusal": refusal}, None, i))
        for n, call in enumerate(calls):
            fn = call.get("function") or {}
            out.append(chunk(id_, created, model, {"tool_calls": [
                {"index": n, "id": call.get("id"), "type": "function",
                 "function": {"name": fn.get("name"), "arguments": fn.get("arguments", "")}}]}, None, i))
        out.append(chunk(id_, created, model, {}, choice.get("finish_reason") or "stop", i))
    if include_usage and completion.get("usage"):
        out.append(usage_chunk(id_, created, model, completion["usage"]))
    return out
