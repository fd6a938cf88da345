"""Export a run dir's model (SavedModel, TFLite, ONNX): `python scripts/export.py --help`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vit_flowers.cli import script_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(script_main("export"))
