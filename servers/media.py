"""Media to upload: a real image, large enough that Synapse makes thumbnails of it."""

from __future__ import annotations

import io

from PIL import Image


def make_image(width: int = 1200, height: int = 900, image_format: str = "JPEG") -> bytes:
    """A colourful gradient image. Synapse thumbnails images larger than its smallest
    thumbnail size (32x32), and makes its bigger sizes (up to 800x600) only from images at
    least that large."""
    red = Image.linear_gradient("L").resize((width, height))
    green = Image.radial_gradient("L").resize((width, height))
    blue = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    out = io.BytesIO()
    Image.merge("RGB", (red, green, blue)).save(out, image_format)
    return out.getvalue()


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of an encoded image (fails if `data` is not one)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.size
