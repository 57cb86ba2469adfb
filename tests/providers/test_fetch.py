"""Images by http(s) URL, downloaded and inlined for Gemini; the gateway refuses to fetch private addresses."""
import base64
import json

import pytest
import requests
import responses

from gateway.providers.fetch import download, inline_images
from gateway.translate.common import UpstreamError
from tests.providers.wire import GEMINI_BASE, gemini_response

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
IMAGE_URL = "https://images.example.com/cat.png"


def picture_request(url=IMAGE_URL):
    return {"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


@responses.activate
def test_an_image_url_is_downloaded_and_sent_inline_to_gemini(make_app):
    app, key = make_app(GATEWAY_FETCH_PRIVATE_URLS="true")
    responses.get(IMAGE_URL, body=PNG, content_type="image/png")
    upstream = responses.post(GEMINI_BASE + "gemini-2.5-flash:generateContent", json=gemini_response("A cat."))
    resp = app.test_client().post("/v1/chat/completions", json=picture_request(),
                                  headers={"Authorization": f"Bearer {key}", "Cache-Control": "no-cache"})
    assert resp.status_code == 200
    parts = json.loads(upstream.calls[0].request.body)["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()}}


def test_a_request_without_remote_images_is_returned_as_is():
    body = {"messages": [{"role": "user", "content": "hi"}]}
    assert inline_images(body, requests.Session()) is body


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x.png", "http://10.0.0.5/x.png", "http://[::1]/x.png",
                                 "http://169.254.169.254/latest/meta-data"])
def test_private_addresses_are_refused(url):
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), url, "messages[0].content[1].image_url.url")
    assert e.value.status == 400 and e.value.error["param"] == "messages[0].content[1].image_url.url"


@responses.activate
def test_a_redirect_to_a_private_address_is_refused():
    responses.get("http://93.184.216.34/pic", status=302, headers={"Location": "http://127.0.0.1/secret"})
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), "http://93.184.216.34/pic", "p")
    assert "not a public address" in e.value.error["message"]


@responses.activate
def test_something_that_is_not_an_image_is_a_400():
    responses.get(IMAGE_URL, body="<html></html>", content_type="text/html")
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), IMAGE_URL, "p", allow_private=True)
    assert e.value.status == 400 and "text/html" in e.value.error["message"]


@responses.activate
def test_a_missing_image_is_a_400_naming_the_host_not_a_500():
    responses.get(IMAGE_URL, status=404)
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), IMAGE_URL, "p", allow_private=True)
    assert e.value.status == 400 and "images.example.com" in e.value.error["message"]


# --- DNS rebinding: the address is checked again where the connection is made ---

@pytest.fixture
def image_server():
    """A local HTTP server answering a PNG; yields (port, the Host headers it saw)."""
    import http.server
    import threading
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.headers.get("Host"))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def resolver(monkeypatch, answers):
    """socket.getaddrinfo answering `answers[host]`: a list used up one answer per call, the last repeating;
    an answer is an address or a list of them."""
    import socket
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        queue = answers[host]
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0))
                for a in (answer if isinstance(answer, list) else [answer])]
    monkeypatch.setattr(socket, "getaddrinfo", fake)


def test_a_host_that_rebinds_to_a_private_address_after_the_check_is_refused(monkeypatch, image_server):
    port, seen = image_server
    resolver(monkeypatch, {"rebind.test": ["93.184.216.34", "127.0.0.1"]})  # public for the check, then loopback
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), f"http://rebind.test:{port}/cat.png", "p")
    assert e.value.status == 400 and "rebind.test" in e.value.error["message"]
    assert seen == []  # nothing reached the private address


def test_the_checked_address_is_the_one_connected_to_with_the_host_name_kept(monkeypatch, image_server):
    from gateway.providers import fetch
    port, seen = image_server
    monkeypatch.setattr(fetch, "_is_global", lambda address: address == "127.0.0.1")  # stand-in public address
    resolver(monkeypatch, {"images.test": ["127.0.0.1"]})
    data_url = download(requests.Session(), f"http://images.test:{port}/cat.png", "p")
    assert data_url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert seen == [f"images.test:{port}"]


def test_every_checked_address_is_tried_in_turn(monkeypatch, image_server):
    from gateway.providers import fetch
    port, seen = image_server
    monkeypatch.setattr(fetch, "_is_global", lambda address: address in ("127.0.0.2", "127.0.0.1"))
    resolver(monkeypatch, {"images.test": [["127.0.0.2", "127.0.0.1"]]})   # nothing listens on the first
    assert download(requests.Session(), f"http://images.test:{port}/cat.png", "p").startswith("data:image/png")
    assert seen == [f"images.test:{port}"]


@pytest.mark.parametrize("address, public", [
    ("93.184.216.34", True), ("2606:2800:220:1::1", True), ("10.1.2.3", False),
    ("64:ff9b::a9fe:a9fe", False),        # NAT64 for 169.254.169.254
    ("2002:7f00:1::1", False),            # 6to4 for 127.0.0.1
    ("64:ff9b::5db8:d822", True),         # NAT64 for 93.184.216.34
])
def test_ipv6_forms_that_carry_an_ipv4_address_are_judged_by_it(address, public):
    from gateway.providers import fetch
    assert fetch._is_global(address) is public


@pytest.mark.parametrize("allow_private", [False, True])
@responses.activate
def test_cookies_an_image_host_sets_are_not_sent_on_the_next_users_download(allow_private, monkeypatch):
    from gateway.providers import fetch, transport
    responses.get(IMAGE_URL, body=PNG, content_type="image/png",
                  headers={"Set-Cookie": "session=user-a; Path=/; Domain=images.example.com"})
    monkeypatch.setattr(fetch, "_public", lambda host: True)  # no DNS here: `responses` answers for the host
    session = transport.make_session(4)  # the provider session, which downloads when private URLs are allowed
    for _ in range(2):
        download(session, IMAGE_URL, "p", allow_private=allow_private)
    assert len(responses.calls) == 2 and "Cookie" not in responses.calls[1].request.headers


# --- images served without a type of their own (S3's binary/octet-stream): the bytes name the format ---

@pytest.mark.parametrize("content_type", ["application/octet-stream", "binary/octet-stream", None])
@responses.activate
def test_an_image_served_as_octet_stream_is_named_by_its_bytes(content_type):
    responses.get(IMAGE_URL, body=PNG, content_type=content_type)   # None: no Content-Type at all
    assert download(requests.Session(), IMAGE_URL, "p", allow_private=True) == \
        "data:image/png;base64," + base64.b64encode(PNG).decode()


@responses.activate
def test_octet_stream_bytes_that_are_no_image_are_a_400():
    responses.get(IMAGE_URL, body=b"#!/bin/sh\necho hi\n", content_type="application/octet-stream")
    with pytest.raises(UpstreamError) as e:
        download(requests.Session(), IMAGE_URL, "p", allow_private=True)
    assert e.value.status == 400 and "not a known image format" in e.value.error["message"]


@pytest.mark.parametrize("data, mime", [
    (PNG, "image/png"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
    (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heic"),   # HEIC under the generic brand
    (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1miaf", "image/heif"),
    (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "image/avif"),  # not HEIF: its own brand says so
    (b"%PDF-1.7\n", "application/pdf"),
    (b"\x00\x00\x00\x18ftypisom", None),        # an MP4 video
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),     # a WAV sound
    (b"<html>", None),
    (b"", None),
])
def test_sniff_names_each_format_by_its_signature(data, mime):
    from gateway.translate.media import sniff
    assert sniff(data) == mime
