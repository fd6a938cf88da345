"""Where the shipped default model lies, however the package was installed.

The repository keeps the model in its top-level `models/` folder; the build
(pyproject.toml, `package-dir`) installs that folder as the package data of
`vit_flowers.default_models`. `importlib.resources` finds it there after a
wheel or sdist install, and after an editable install, which maps the same
name onto the checkout's `models/`. A checkout used without installing it
(its root on `sys.path`) has no such package: then the folder beside the
package is used.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MODELS_PACKAGE = "vit_flowers.default_models"
DEFAULT_MODEL_NAME = "flowers-hybrid-lite0"


def default_model_dir() -> Path:
    """The run dir of the shipped default model (config.json, model.weights.h5).

    The path may not exist (say, a checkout whose model was removed): the
    caller says so. A package imported from a zip archive has no file-system
    path for its data; the path returned then names the archive's member,
    which does not exist either.
    """
    try:
        model = resources.files(MODELS_PACKAGE).joinpath(DEFAULT_MODEL_NAME)
    except ModuleNotFoundError:  # a checkout on sys.path, not installed
        return Path(__file__).resolve().parents[1] / "models" / DEFAULT_MODEL_NAME
    return model if isinstance(model, Path) else Path(str(model))


# the shipped model, wherever the package is installed
DEFAULT_MODEL_DIR = default_model_dir()
