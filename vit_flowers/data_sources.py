"""Where a data set comes from: a local folder, the flower_photos download,
or a generator of this package (synthetic flowers, inspection shapes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import BadInputError
from .filelists import scan_class_folders

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
GENERATED = ("synthetic", "inspection")


def download_flower_photos(url: str = FLOWERS_URL) -> Path:
    """Fetch and unpack flower_photos with Keras' cache; return its folder.

    Offline, the error says how to use a local copy instead.
    """
    import keras

    try:
        archive = Path(keras.utils.get_file("flower_photos.tgz", url, extract=True))
    except Exception as err:  # network errors come in many types
        raise BadInputError(
            f"could not download {url} ({type(err).__name__}: {err}). "
            f"Download and unpack it elsewhere, then pass the folder: --source /path/to/flower_photos"
        ) from err
    for candidate in (archive, archive / "flower_photos", archive.parent / "flower_photos"):
        if candidate.is_dir() and (candidate / "daisy").is_dir():
            return candidate
    raise BadInputError(f"{archive}: downloaded, but no flower_photos/<class>/ folders inside")


def source_rows(source: str, out_dir: Path, per_class: int, image_size: int, seed: int) -> pd.DataFrame:
    """List rows (base_path, type_dir, file_name) for `source`, generating
    images under `out_dir/images` when the source is a generator."""
    if source == "synthetic":
        from .synthetic import write_synthetic_flowers

        return write_synthetic_flowers(out_dir / "images", per_class, image_size, seed)
    if source == "inspection":
        from .primer.inspection import write_inspection_classes

        write_inspection_classes(out_dir / "images", n_per_class=per_class, image_size=image_size, seed=seed)
        return scan_class_folders(out_dir / "images")
    if source == "download":
        return scan_class_folders(download_flower_photos())
    folder = Path(source)
    if not folder.is_dir():
        raise BadInputError(
            f"--source {source!r}: not a folder; use a folder of class subfolders, "
            f"'download', or one of {GENERATED}"
        )
    return scan_class_folders(folder)
