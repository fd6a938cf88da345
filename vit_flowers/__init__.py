"""Fine-tune and explain Vision Transformers on flower photos."""

import os as _os

__version__ = "0.1.0"

# OpenCV (which decodes JPEGs here) reads its pixel limit at its first decode:
# make it PIL's decompression-bomb limit (PIL.Image.MAX_IMAGE_PIXELS).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(int(1024 * 1024 * 1024 // 4 // 3)))
