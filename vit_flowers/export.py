"""Export a run dir's model so that it runs without this package.

A run dir is rebuilt from `config.json` by this package's code (vit_keras'
layers, Lambda layers included), which is what makes it hard to serve. The
export traces `tf.function`s over the loaded model, so what is written is a
graph and weights only:

- `saved_model/`: loads with `tf.saved_model.load` where only TensorFlow is
  installed; signatures `serving_default` (encoded image bytes ->
  probabilities and label, decoding and resizing in the graph, the
  TensorFlow Serving convention), `predict_images` (uint8 images at the
  model's size -> probabilities) and `attention` (uint8 images -> the
  attention rollout mask at the image's size);
- `model.tflite` (float32) and `model_int8.tflite` (dynamic-range quantised
  weights): `predict_images` for LiteRT (`ai_edge_litert`) or
  `tf.lite.Interpreter`;
- `model.onnx`: `images` -> `probabilities` through `tf2onnx`, for ONNX
  Runtime;
- `labels.txt` (class names in output order) and a `README.md` saying what
  each file takes and gives.

The in-graph decoder follows `vit_flowers.images` where TensorFlow can:
JPEGs with the accurate integer DCT (as libjpeg's default that OpenCV
uses), grayscale and palette images to RGB, alpha composited on white, the
first frame of a GIF, area averaging to shrink 2x or more and bilinear
otherwise, rounded to uint8 before `x / 127.5 - 1`. It does not apply an
EXIF orientation (clients send upright images). Bad bytes (empty, not an
image, over the decompression-bomb pixel limit) fail the request with an
`InvalidArgumentError` naming the element and the reason.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .attention import split_model, transformer_blocks
from .choices import EXPORT_FORMATS, parse_formats
from .compat import patch_tf2onnx
from .datasets import preprocess
from .errors import BadInputError
from .images import REDUCED_SCALES
from .model import load_run
from .outputs import move_into_place
from .predict import predict_arrays

FORMATS = EXPORT_FORMATS
SAVED_MODEL_DIR = "saved_model"
TFLITE_FILE = "model.tflite"
TFLITE_INT8_FILE = "model_int8.tflite"
ONNX_FILE = "model.onnx"
LABELS_FILE = "labels.txt"
README_FILE = "README.md"
# what an export writes besides labels.txt and README.md: those this export does not rewrite are removed
EXPORT_FILES = (SAVED_MODEL_DIR, TFLITE_FILE, TFLITE_INT8_FILE, ONNX_FILE)
SIGNATURES = ("serving_default", "predict_images", "attention")
# PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS), which the package's decoder applies
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
ONNX_OPSET = 17
# largest |difference| from the package's probabilities that a float export may show
FLOAT_TOLERANCE = 1e-4
CHECK_IMAGES = 4


class ExportUnavailableError(BadInputError):
    """A format whose converter does not work with the installed stack; the
    message names the converter and its error."""


@dataclass
class ExportResult:
    """What `export_run` wrote, and how far each export is from the package
    on a few random images (max |probability difference|)."""

    out_dir: Path
    written: list[Path] = field(default_factory=list)
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------ in-graph decoding
def _header_size(data, image_format):
    """(height, width) as int64 read from the file header, without decoding:
    JPEG by `extract_jpeg_shape`, PNG from IHDR, GIF from the logical screen,
    BMP from BITMAPINFOHEADER (top-down BMPs store a negative height)."""
    padded = tf.strings.join([data, tf.constant(b"\0" * 32)])

    def field_bytes(offset, length):
        return tf.cast(tf.io.decode_raw(tf.strings.substr(padded, offset, length), tf.uint8), tf.int64)

    def big_endian(b):
        return b[0] * 2 ** 24 + b[1] * 2 ** 16 + b[2] * 2 ** 8 + b[3]

    def png():
        b = field_bytes(16, 8)
        return tf.stack([big_endian(b[4:]), big_endian(b[:4])])

    def gif():
        b = field_bytes(6, 4)
        return tf.stack([b[2] + b[3] * 256, b[0] + b[1] * 256])

    def bmp():
        b = field_bytes(18, 8)
        width = b[0] + b[1] * 2 ** 8 + b[2] * 2 ** 16 + b[3] * 2 ** 24
        height = b[4] + b[5] * 2 ** 8 + b[6] * 2 ** 16 + b[7] * 2 ** 24
        height = tf.where(height >= 2 ** 31, 2 ** 32 - height, height)
        return tf.stack([height, width])

    def jpeg():
        return tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64)

    return tf.switch_case(image_format, [jpeg, png, gif, bmp])


def _image_format(data):
    """0 JPEG, 1 PNG, 2 GIF, 3 BMP, -1 anything else, from the magic bytes."""
    head = tf.strings.substr(data, 0, 4)
    checks = [
        tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"),
        tf.equal(head, b"\x89PNG"),
        tf.equal(head, b"GIF8"),
        tf.equal(tf.strings.substr(head, 0, 2), b"BM"),
    ]
    index = tf.constant(-1)
    for k in range(len(checks) - 1, -1, -1):
        index = tf.where(checks[k], k, index)
    return index


def _to_rgb(image):
    """uint8 (h, w, 1|2|3|4) -> (h, w, 3): gray repeated, alpha composited on white."""
    channels = tf.shape(image)[-1]
    colour = tf.gather(image, tf.where(channels >= 3, tf.constant([0, 1, 2]), tf.constant([0, 0, 0])), axis=-1)
    has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
    alpha = tf.cast(tf.gather(image, [channels - 1], axis=-1), tf.float32) / 255.0
    alpha = tf.where(has_alpha, alpha, 1.0)
    blended = tf.cast(colour, tf.float32) * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(blended), 0.0, 255.0), tf.uint8)


def _resize(image, size: tuple[int, int]):
    """uint8 (h, w, 3) -> uint8 at `size`, as `vit_flowers.images.decode_image`:
    area averaging to shrink 2x or more in both sides, else bilinear (which
    leaves an image already at `size` as it is)."""
    height, width = size
    shape = tf.shape(image)
    halving = tf.logical_and(shape[0] >= 2 * height, shape[1] >= 2 * width)
    area = tf.image.resize(image, size, method="area")
    linear = tf.image.resize(image, size, method="bilinear")
    out = tf.round(tf.where(halving, area, linear))
    return tf.ensure_shape(tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8), (height, width, 3))


def _decode_jpeg(data, hw, size: tuple[int, int]):
    """JPEG bytes -> uint8 RGB at the DCT scale (1, 2, 4 or 8) that
    `vit_flowers.images.reduced_scale` picks for the stored size `hw` and the
    target `size`, as the package's loader decodes them (libjpeg's scaled
    decoding, accurate integer IDCT)."""
    scales = (1, *sorted(REDUCED_SCALES))
    short, need = tf.reduce_min(hw), max(size)
    # how many scales above 1 keep the short side >= the target's long side: the index of the largest one
    index = tf.reduce_sum(tf.cast(tf.stack([short >= s * need for s in scales[1:]]), tf.int32))
    return tf.switch_case(index, [
        (lambda r=ratio: tf.io.decode_jpeg(data, channels=3, ratio=r, dct_method="INTEGER_ACCURATE"))
        for ratio in scales])


def decode_one(data, index, size: tuple[int, int]):
    """One encoded image (a scalar tf.string) -> uint8 (height, width, 3) at
    `size`; bad bytes fail with a message naming `image_bytes[index]`."""
    where = tf.strings.format("image_bytes[{}]: ", index)
    length = tf.strings.length(data)
    checks = [tf.debugging.Assert(length > 0, [tf.strings.join([
        where, "empty string; expected an encoded JPEG, PNG, GIF or BMP image"])])]
    with tf.control_dependencies(checks):
        image_format = _image_format(data)
    checks = [tf.debugging.Assert(image_format >= 0, [tf.strings.join([
        where, "not a JPEG, PNG, GIF or BMP image (it starts with ",
        tf.strings.format("{}", tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8)), ")"])])]
    with tf.control_dependencies(checks):
        hw = _header_size(data, tf.maximum(image_format, 0))
    checks = [tf.debugging.Assert(
        tf.logical_and(tf.reduce_all(hw > 0), hw[0] * hw[1] <= MAX_PIXELS),
        [tf.strings.join([where, tf.strings.format("{} x {} pixels", (hw[1], hw[0])),
                          f" is empty or over the limit of {MAX_PIXELS} pixels"])])]
    with tf.control_dependencies(checks):
        image = tf.cond(
            tf.equal(image_format, 0),
            lambda: _decode_jpeg(data, hw, size),
            lambda: tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8),
        )
    image = tf.ensure_shape(image, (None, None, None))
    return _resize(_to_rgb(image), size)


def decode_images(image_bytes, size: tuple[int, int]):
    """A batch of encoded images (tf.string [N]) -> uint8 [N, height, width, 3]."""
    count = tf.shape(image_bytes)[0]
    return tf.map_fn(lambda args: decode_one(args[0], args[1], size), (image_bytes, tf.range(count)),
                     fn_output_signature=tf.TensorSpec((*size, 3), tf.uint8))


# ------------------------------------------------------------ graph functions
class ExportFunctions:
    """The three traced functions over one loaded classifier.

    `predict_images` is `model(x / 127.5 - 1)` as the package's predict path;
    `attention` computes the rollout of `vit_flowers.attention` with its
    default options (mean head fusion, no discard, every layer, "matrix"
    normalisation) inside the graph, then upsamples it bilinearly.
    """

    def __init__(self, model, class_names: Sequence[str]) -> None:
        self.model = model
        self.class_names = list(class_names)
        backbone, _ = split_model(model)
        self.size: tuple[int, int] = (int(backbone.input_shape[1]), int(backbone.input_shape[2]))
        embedding = backbone.get_layer("embedding")
        self.grid: tuple[int, int] = (int(embedding.output.shape[1]), int(embedding.output.shape[2]))
        blocks = transformer_blocks(backbone)
        self._attention_graph = keras.Model(backbone.inputs, [b.output[1] for b in blocks],
                                            name=f"{model.name}_attention_export")
        self._labels = tf.constant(self.class_names)
        images = tf.TensorSpec((None, *self.size, 3), tf.uint8, name="images")
        self.predict_images = tf.function(self._predict_images, input_signature=[images])
        self.attention = tf.function(self._attention, input_signature=[images])
        self.serving_default = tf.function(self._serving, input_signature=[
            tf.TensorSpec((None,), tf.string, name="image_bytes")])

    def _probabilities(self, images):
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        return tf.cast(self.model(x, training=False), tf.float32)

    def _predict_images(self, images):
        return {"probabilities": self._probabilities(images)}

    def _serving(self, image_bytes):
        probabilities = self._probabilities(decode_images(image_bytes, self.size))
        label = tf.gather(self._labels, tf.argmax(probabilities, axis=-1))
        return {"probabilities": probabilities, "label": label}

    def _attention(self, images):
        x = tf.cast(images, tf.float32) / 127.5 - 1.0
        attention = self._attention_graph(x, training=False)
        attention = attention if isinstance(attention, (list, tuple)) else [attention]
        # head-fused, + identity for the residual path, divided by the whole matrix's sum
        layers = [tf.reduce_mean(tf.cast(a, tf.float32), axis=1) for a in attention]
        layers = [a + tf.eye(tf.shape(a)[-1]) for a in layers]
        layers = [a / tf.reduce_sum(a, axis=(-2, -1), keepdims=True) for a in layers]
        row = layers[-1][:, 0, :]  # the class token's row, multiplied from the last layer to the first
        for a in reversed(layers[:-1]):
            row = tf.einsum("nt,nts->ns", row, a)
        masks = tf.reshape(row[:, 1:], (-1, *self.grid))
        masks = tf.math.divide_no_nan(masks, tf.reduce_max(masks, axis=(1, 2), keepdims=True))
        upsampled = tf.image.resize(masks[..., tf.newaxis], self.size, method="bilinear")
        return {"attention": upsampled[..., 0]}


# ------------------------------------------------------------ writers
def write_saved_model(functions: ExportFunctions, path: Path) -> Path:
    """The SavedModel with its three signatures through Keras' ExportArchive,
    which keeps the variables the functions use. (`archive.track(model)`
    would store every variable a second time.)"""
    archive = keras.export.ExportArchive()
    archive.add_endpoint("serving_default", functions.serving_default)
    archive.add_endpoint("predict_images", functions.predict_images)
    archive.add_endpoint("attention", functions.attention)
    archive.write_out(str(path), verbose=False)
    return path


def tflite_bytes(saved_model: Path, quantize: bool) -> bytes:
    """`predict_images` of a SavedModel as a TFLite flatbuffer; `quantize`:
    dynamic-range quantisation (int8 weights, float activations)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["predict_images"])
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _erfc_handler(ctx, node, name, args) -> None:
    """tf2onnx handler for TensorFlow's Erfc, which tf2onnx 1.17 lacks and
    TensorFlow 2.21 uses for the exact GELU (`0.5 x erfc(-x / sqrt 2)`):
    erfc(x) = 1 - erf(x) with ONNX's Erf."""
    from tf2onnx import utils  # optional: the export extra (tf2onnx)

    dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name)
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def onnx_bytes(functions: ExportFunctions) -> bytes:
    """`predict_images` through tf2onnx (as Keras' own ONNX export does, with
    its NumPy 2 patch, plus a handler for Erfc); the error names tf2onnx when
    it fails."""
    spec = (tf.TensorSpec((None, *functions.size, 3), tf.uint8, name="images"),)
    try:
        import tf2onnx  # optional: the export extra; missing, the export fails naming it

        with warnings.catch_warnings():  # its `np.object` alias warns under NumPy 2
            warnings.simplefilter("ignore", FutureWarning)
            patch_tf2onnx()
        proto, _ = tf2onnx.convert.from_function(functions.predict_images, input_signature=spec, opset=ONNX_OPSET,
                                                 custom_op_handlers={"Erfc": (_erfc_handler, [])})
    except Exception as err:  # a converter fails in many ways
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ExportUnavailableError(
            f"ONNX export failed: tf2onnx {_version('tf2onnx')} with TensorFlow {tf.__version__}: "
            f"{type(err).__name__}: {message[:300]}") from err
    return proto.SerializeToString()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "(not installed)"


# ------------------------------------------------------------ runtimes (for checks and benchmarks)
def tflite_interpreter(path: str | Path, num_threads: int | None = None):
    """A TFLite interpreter: LiteRT's (`ai_edge_litert`, the maintained
    runtime) when installed, else TensorFlow's deprecated `tf.lite.Interpreter`."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # optional: LiteRT, else TensorFlow's interpreter
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
    return Interpreter(model_path=str(path), num_threads=num_threads)


def tflite_predict(interpreter, images: np.ndarray) -> np.ndarray:
    """Probabilities of uint8 images (N, H, W, 3) through a TFLite file's
    `predict_images`, the whole batch in one call (the runner resizes the
    input to the batch)."""
    runner = interpreter.get_signature_runner("predict_images")
    return runner(images=np.ascontiguousarray(images, np.uint8))["probabilities"]


def onnx_session(path: str | Path, num_threads: int | None = None):
    """An ONNX Runtime session on the CPU."""
    import onnxruntime as ort  # optional: the export extra (onnxruntime)

    options = ort.SessionOptions()
    if num_threads:
        options.intra_op_num_threads = num_threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(session, images: np.ndarray) -> np.ndarray:
    return session.run(["probabilities"], {"images": np.ascontiguousarray(images, np.uint8)})[0]


# ------------------------------------------------------------ the command
def export_run(run_dir: str | Path, out_dir: str | Path, formats: str | Sequence[str] = FORMATS,
               check: bool = True, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export the run dir's model into `out_dir` in `formats` (savedmodel,
    tflite, onnx); `labels.txt` and `README.md` always.

    Everything is built in a temporary folder inside `out_dir` and moved into
    place at the end, so a failed export leaves the previous one whole; the
    files of formats an earlier export wrote there and this one does not are
    removed, so no file of another model stays beside these. TFLite
    is converted from a SavedModel, built for it even when `savedmodel` is not
    asked for (and then not kept). With `check`, each export predicts a few
    random images and its largest difference from the package
    (`predict.predict_arrays`) must stay within FLOAT_TOLERANCE (the int8
    file's is only reported).
    """
    log = log or (lambda text: None)
    formats = parse_formats(formats)
    model, run_config = load_run(run_dir)
    class_names = run_config.model.class_names
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"{out_dir}: exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = ExportResult(out_dir=out_dir)
    functions = ExportFunctions(model, class_names)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-export-", dir=out_dir))
    try:
        files: list[str] = []
        if "onnx" in formats:  # first: the converter that may fail does so before the slow work
            start = time.perf_counter()
            (staging / ONNX_FILE).write_bytes(onnx_bytes(functions))
            result.seconds["onnx"] = time.perf_counter() - start
            files.append(ONNX_FILE)
        if "savedmodel" in formats or "tflite" in formats:
            start = time.perf_counter()
            write_saved_model(functions, staging / SAVED_MODEL_DIR)
            result.seconds["savedmodel"] = time.perf_counter() - start
            if "savedmodel" in formats:
                files.insert(0, SAVED_MODEL_DIR)
        if "tflite" in formats:
            start = time.perf_counter()
            for name, quantize in ((TFLITE_FILE, False), (TFLITE_INT8_FILE, True)):
                (staging / name).write_bytes(tflite_bytes(staging / SAVED_MODEL_DIR, quantize))
                files.append(name)
            result.seconds["tflite"] = time.perf_counter() - start
        if check:
            result.max_abs_diff = check_exports(model, staging, files, functions.size)
        (staging / LABELS_FILE).write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")
        (staging / README_FILE).write_text(readme_text(run_dir, run_config, staging, files, result.max_abs_diff),
                                           encoding="utf-8")
        for name in files + [LABELS_FILE, README_FILE]:
            result.written.append(move_into_place(staging / name, out_dir / name))
        for name in set(EXPORT_FILES) - set(files):  # an earlier export's, of another model perhaps
            _remove(out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for line in summary_lines(result):
        log(line)
    return result


def summary_lines(result: ExportResult) -> list[str]:
    """What was written, with sizes and the check's differences, for the terminal."""
    lines = []
    for path in result.written:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
        lines.append(f"{path}{'/' if path.is_dir() else ''} ({_size_text(size)})")
    if result.max_abs_diff:
        lines.append("largest |probability difference| from the package on random images: "
                     + ", ".join(f"{k} {v:.1e}" for k, v in result.max_abs_diff.items()))
    return lines


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()




def check_exports(model, folder: Path, files: Sequence[str], size: tuple[int, int],
                  count: int = CHECK_IMAGES) -> dict[str, float]:
    """Largest |probability difference| of each export from the package on
    `count` random uint8 images; float exports beyond FLOAT_TOLERANCE fail."""
    images = np.random.default_rng(0).integers(0, 256, (count, *size, 3), dtype=np.uint8)
    expected = predict_arrays(model, preprocess(images))
    got: dict[str, np.ndarray] = {}
    if SAVED_MODEL_DIR in files:
        loaded = tf.saved_model.load(str(folder / SAVED_MODEL_DIR))  # a fresh load: the graph as served
        got["savedmodel"] = loaded.signatures["predict_images"](images=tf.constant(images))["probabilities"].numpy()
    for name in (TFLITE_FILE, TFLITE_INT8_FILE):
        if name in files:
            got[name.removesuffix(".tflite").replace("model", "tflite")] = tflite_predict(
                tflite_interpreter(folder / name), images)
    if ONNX_FILE in files:
        got["onnx"] = onnx_predict(onnx_session(folder / ONNX_FILE), images)
    diffs = {name: float(np.abs(probs - expected).max()) for name, probs in got.items()}
    bad = {name: diff for name, diff in diffs.items() if name != "tflite_int8" and not diff <= FLOAT_TOLERANCE}
    if bad:
        raise RuntimeError(f"exports differ from the package by more than {FLOAT_TOLERANCE}: {bad}")
    return diffs


def readme_text(run_dir, run_config, folder: Path, files: Sequence[str], diffs: dict[str, float]) -> str:
    """The exported folder's README: what each file takes and gives."""
    m = run_config.model
    height, width = m.image_size
    classes = ", ".join(m.class_names)
    lines = [
        f"# Exported ViT classifier ({m.arch}, {height}x{width} input, {m.num_classes} classes)",
        "",
        f"Exported from the run dir `{Path(run_dir).name}`. Classes in output order "
        f"(also in `{LABELS_FILE}`): {classes}.",
        "",
        "Inputs are RGB. `images` are uint8 `[N, "
        f"{height}, {width}, 3]`, already resized; the model scales them `x / 127.5 - 1` itself. "
        "`probabilities` are float32 `[N, classes]` (softmax, rows sum to 1).",
        "",
        "| file | takes | gives | runs with |",
        "|---|---|---|---|",
    ]
    if SAVED_MODEL_DIR in files:
        lines += [
            f"| `{SAVED_MODEL_DIR}/` signature `serving_default` | `image_bytes`: tf.string `[N]`, encoded "
            "JPEG/PNG/GIF/BMP of any size (REST: `{\"instances\": [{\"b64\": \"...\"}]}`) | `probabilities`, "
            "`label` (tf.string `[N]`) | TensorFlow, TensorFlow Serving |",
            f"| `{SAVED_MODEL_DIR}/` signature `predict_images` | `images` | `probabilities` | TensorFlow |",
            f"| `{SAVED_MODEL_DIR}/` signature `attention` | `images` | `attention`: float32 `[N, {height}, "
            f"{width}]`, attention rollout mask in [0, 1] | TensorFlow |",
        ]
    for name, what in ((TFLITE_FILE, "float32"), (TFLITE_INT8_FILE, "dynamic-range quantised (int8 weights)")):
        if name in files:
            lines.append(f"| `{name}` ({what}, {_size_text(folder / name)}), signature `predict_images` | "
                         "`images` | `probabilities` | LiteRT (`ai_edge_litert`), `tf.lite.Interpreter` |")
    if ONNX_FILE in files:
        lines.append(f"| `{ONNX_FILE}` (opset {ONNX_OPSET}, {_size_text(folder / ONNX_FILE)}) | `images` | "
                     "`probabilities` | ONNX Runtime |")
    lines += [
        "",
        "`serving_default` decodes in the graph: the first frame of a GIF, alpha composited on white, "
        "no EXIF orientation (send upright images); it shrinks by area averaging (2x or more) or bilinear. "
        "An empty string, bytes that are not an image or an image over "
        f"{MAX_PIXELS} pixels fail the request with an InvalidArgumentError naming `image_bytes[i]`.",
    ]
    if diffs:
        lines += ["", "Checked at export on random images, largest |probability difference| from the "
                  "training package: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()) + "."]
    return "\n".join(lines) + "\n"


def _size_text(size: int | Path) -> str:
    """Bytes (or a file's size) as KiB or MiB."""
    size = size.stat().st_size if isinstance(size, Path) else size
    return f"{size / 2 ** 20:.2f} MiB" if size >= 2 ** 20 else f"{size / 2 ** 10:.1f} KiB"
