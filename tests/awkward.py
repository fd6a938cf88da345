"""Make a folder of awkward image files: the bad ones a loader must skip with
a reason, and the odd-but-good ones it must read correctly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# file name -> what the reason must mention
BAD = {
    "zero_bytes.jpg": "empty file",
    "truncated.jpg": "cannot decode",
    "random_bytes.jpg": "not an image",
    "text.png": "not an image",
    "folder.jpg": "is a directory",
    "bomb.png": "decompression-bomb",
}
GOOD = [
    "exif_rotated.jpg", "cmyk.jpg", "rgba.png", "palette.gif", "gray16.png",
    "gray.jpg", "image.webp", "one_pixel.png", "wide.png",
]


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def upright_test_image(width: int = 80, height: int = 40) -> Image.Image:
    """Red left half, blue right half: orientation is easy to check."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (220, 20, 20)
    pixels[:, width // 2 :] = (20, 20, 220)
    return Image.fromarray(pixels, "RGB")


def make_awkward_folder(folder: Path) -> Path:
    """Write every BAD and GOOD file into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    upright = upright_test_image()
    (folder / "zero_bytes.jpg").write_bytes(b"")
    good_jpeg = _jpeg_bytes(upright)
    (folder / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 3])
    (folder / "random_bytes.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
    (folder / "text.png").write_text("this is not a picture\n")
    (folder / "folder.jpg").mkdir(exist_ok=True)
    # over PIL's bomb limit: a 1-bit PNG whose header declares many pixels compresses tiny
    Image.new("1", (10000, 10000)).save(folder / "bomb.png")
    # EXIF orientation 6 ("rotate 90° clockwise to display"): stored sideways, must come out upright
    sideways = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    (folder / "exif_rotated.jpg").write_bytes(_jpeg_bytes(sideways, exif=exif.tobytes()))
    upright.convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (20, 0, 40, 40))  # opaque blue right half
    rgba.save(folder / "rgba.png")
    upright.convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(folder / "palette.gif")
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(folder / "gray16.png")
    upright.convert("L").save(folder / "gray.jpg", quality=95)
    upright.save(folder / "image.webp", quality=95)
    Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_pixel.png")
    Image.new("RGB", (2000, 10), (200, 200, 0)).save(folder / "wide.png")
    return folder
