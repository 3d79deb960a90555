"""Photos are images: accepted only if Pillow decodes them as JPEG, PNG or WebP.

The content type stored and served is the one of the decoded format, never the caller's
header (which can say ``image/png`` of an HTML page). Images above ``MAX_PIXELS`` are refused
before decoding (a small file can declare a huge canvas).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from geo.core.errors import InvalidInput, Problem

CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
MAX_PIXELS = 50_000_000
# What a served photo may do in a browser: nothing but be shown.
PHOTO_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; sandbox",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _refuse(reason: str) -> InvalidInput:
    return InvalidInput("a photo must be a JPEG, PNG or WebP image",
                        [Problem(field="photo", reason=reason)])


def photo_content_type(data: bytes, *, decode: bool = True) -> str:
    """The content type of ``data`` as Pillow reads it (``image/jpeg``, ``image/png`` or
    ``image/webp``); 422 for anything else. ``decode`` decodes every pixel (on upload); without
    it only the header is read (when serving a stored photo)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(CONTENT_TYPES)) as img:
                fmt = img.format or ""
                width, height = img.size
                if width * height > MAX_PIXELS:
                    raise _refuse(f"{width}×{height} pixels; at most {MAX_PIXELS}")
                if decode:
                    img.load()
    except InvalidInput:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise _refuse("not a JPEG, PNG or WebP image" if isinstance(
            exc, UnidentifiedImageError) else "too many pixels") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _refuse(f"the image does not decode: {str(exc)[:200]}") from None
    if fmt not in CONTENT_TYPES:
        raise _refuse(f"format {fmt or 'unknown'}")
    return CONTENT_TYPES[fmt]
