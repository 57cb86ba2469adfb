"""A data: URL's declared image type against what its bytes are (gateway/translate/media.py)."""
import base64

import pytest

from gateway.translate.media import image_type

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(40)).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(40)).decode()
WEBP = base64.b64encode(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40)).decode()
UNKNOWN = base64.b64encode(b"not an image at all, just some bytes").decode()


@pytest.mark.parametrize("declared, data, sent", [
    ("image/png", JPEG, "image/jpeg"),      # a PNG label on JPEG bytes: Anthropic refuses the mismatch
    ("image/jpg", JPEG, "image/jpeg"),      # a spelling no provider takes
    ("image/jpeg", PNG, "image/png"),
    ("image/png", WEBP, "image/webp"),
    ("image/png", PNG, "image/png"),
    ("image/jpg", UNKNOWN, "image/jpeg"),   # bytes we cannot name: the label, spelled right
    ("image/gif", UNKNOWN, "image/gif"),
    ("image/png", "%%%not base64%%%", "image/png"),
    ("image/png", "", "image/png"),
])
def test_the_bytes_name_the_image_type(declared, data, sent):
    assert image_type(declared, data) == sent
