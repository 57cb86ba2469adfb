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
