"""Where a data set comes from: a local folder, the flower_photos download,
or a registered generator (the CLI registers the synthetic flowers and the
inspection shapes; this module imports neither).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from .errors import BadInputError
from .filelists import scan_class_folders
from .outputs import InputFolders

FLOWERS_URL = "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz"
# writes images under a folder and returns their list rows: (folder, per class, image side, seed) -> rows
Generator = Callable[[Path, int, int, int], pd.DataFrame]


def download_flower_photos(url: str = FLOWERS_URL) -> Path:
    """Fetch and unpack flower_photos with Keras' cache; return its folder.

    Offline, the error says how to use a local copy instead.
    """
    # local: `prepare` and the demo's data step read folders and draw images without TensorFlow; only the
    # download uses Keras (its file cache), and importing Keras starts TensorFlow
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


def source_rows(sources: str | Sequence[str], out_dir: Path, per_class: int, image_size: int, seed: int,
                generators: Mapping[str, Generator], folders: InputFolders | None = None) -> pd.DataFrame:
    """List rows (base_path, type_dir, file_name) for one source or several
    split as one set: a generator's name (its images are written under
    `out_dir/images`), 'download', or a folder of class subfolders (read
    through `folders`, which leaves out folders of outputs and keeps what it
    left out)."""
    folders = folders if folders is not None else InputFolders(out=out_dir)
    if isinstance(sources, str):
        sources = [sources]
    if len(sources) > 1 and any(s in generators or s == "download" for s in sources):
        raise BadInputError(f"--source {' '.join(sources)}: several sources must all be folders")
    # each source reads its folders once; a file reached through two sources is refused below
    frames = [_one_source(s, out_dir, per_class, image_size, seed, generators, dataclasses.replace(folders, seen=set()))
              for s in sources]
    rows = pd.concat(frames, ignore_index=True)
    # realpath, not Path.resolve: a symbolic link loop among the files must not raise here (it is skipped later)
    files = [os.path.realpath(os.path.join(b, t, f))
             for b, t, f in rows[["base_path", "type_dir", "file_name"]].itertuples(index=False)]
    twice = pd.Series(files)[pd.Series(files).duplicated()]
    if len(twice):
        raise BadInputError(f"--source: {twice.iloc[0]} is found through more than one source; each file must be "
                            f"listed once, or it could land in both the training and the test list")
    return rows


def _one_source(source: str, out_dir: Path, per_class: int, image_size: int, seed: int,
                generators: Mapping[str, Generator], folders: InputFolders) -> pd.DataFrame:
    if source in generators:
        return generators[source](out_dir / "images", per_class, image_size, seed)
    if source == "download":
        return scan_class_folders(download_flower_photos(), folders)
    folder = Path(source)
    if not folder.is_dir():
        raise BadInputError(
            f"--source {source!r}: not a folder; use a folder of class subfolders, "
            f"'download', or one of {', '.join(generators)}"
        )
    return scan_class_folders(folder, folders)
