"""What media bytes are, by their own signature: used where an image is downloaded (providers/fetch.py) and where
a client's data: URL is translated, since its declared type may not be what the bytes are."""
import binascii

# Leading bytes of the formats the providers take (Gemini: PNG, JPEG, WEBP, HEIC, HEIF, and PDF; GIF for Claude
# and OpenAI), from each format's specification; WEBP and the ISO formats are told apart in `sniff`.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)
# ISO base media files (`ftyp` box) name their format by brands: the major one at bytes 8-12, compatible ones
# after it. AVIF shares the generic `mif1` brand with HEIF, so its own brands are looked for first.
_FTYP_BRANDS = ((frozenset({b"avif", b"avis"}), "image/avif"),
                (frozenset({b"heic", b"heix", b"heim", b"heis"}), "image/heic"),
                (frozenset({b"mif1", b"msf1", b"heif"}), "image/heif"))


def sniff(data):
    """The image (or PDF) type the bytes' signature says, or None."""
    head = bytes(data[:16])
    for magic, mime in _SIGNATURES:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        size = min(int.from_bytes(head[:4], "big"), 256, len(data))
        box = bytes(data[8:size])
        brands = {box[i:i + 4] for i in range(0, len(box) - 3, 4)} - {box[4:8]}  # box[4:8]: the minor version
        for names, mime in _FTYP_BRANDS:
            if brands & names:
                return mime
    return None


# Base64 characters enough for the bytes `sniff` reads (an ISO file's brands are within its first 256).
_HEAD_CHARS = 344


def image_type(declared, data):
    """The type to send for base64 `data` declared as image type `declared`: the bytes' own when they name an
    image, else `declared` (`image/jpg` spelled `image/jpeg`). Clients build data URLs from file names, and
    Anthropic refuses a label the bytes contradict (400 "The image was specified using the image/png media type,
    but the image appears to be a image/jpeg image", home-assistant/core#167208) and any type outside its four."""
    try:
        head = binascii.a2b_base64(data[:_HEAD_CHARS])
    except (binascii.Error, ValueError):
        head = b""
    sniffed = sniff(head)
    if sniffed and sniffed.startswith("image/"):
        return sniffed
    return "image/jpeg" if declared == "image/jpg" else declared
