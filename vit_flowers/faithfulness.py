"""How faithful and how well placed attention maps are: perturbation curves and localisation.

Perturbation (RISE, Petsiuk et al. 2018; the negative perturbation of
Chefer et al. 2021): change the photo's patches in the order a map ranks
them and follow the predicted class's probability. Deletion removes the
most relevant patches first (a faithful map makes the probability fall
fast: low AUC is good); insertion starts from a blurred photo and puts the
most relevant patches back first (high AUC is good); negative removes the
least relevant first (the prediction should hold: high AUC is good).

Localisation (pointing game, Zhang et al. 2016): does the map's peak fall
inside the flower's box, and how much more of its mass lies there than a
uniform map would put there.

Maps are (N, h, w) arrays over the model's patch grid; model inputs are
float32 in [-1, 1] (`x / 127.5 - 1` of uint8 pixels, as vit_keras'
`preprocess_inputs`). Everything here is NumPy; the model is reached only
through a `predict` callable or an `AttentionExplainer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import pandas as pd

from .attention import grid_masks, rollout_fused, upsample

KINDS = ("deletion", "negative", "insertion")

Predict = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------ curve pieces
def rise_auc(curves: np.ndarray) -> np.ndarray:
    """Area under curves along the last axis, as RISE: trapezoids over steps spaced 1/(len - 1)."""
    p = np.asarray(curves, dtype=np.float64)
    if p.shape[-1] < 2:
        raise ValueError(f"a curve needs at least 2 points, got {p.shape[-1]}")
    return (p.sum(axis=-1) - p[..., 0] / 2 - p[..., -1] / 2) / (p.shape[-1] - 1)


def patch_order(maps: np.ndarray, descending: bool = True) -> np.ndarray:
    """(N, h, w) maps -> (N, h*w) patch indices, most relevant first (or least first).

    Ties keep the patch index order (a stable sort), so flat maps give one
    deterministic order whatever the direction.
    """
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    return np.argsort(-flat if descending else flat, axis=1, kind="stable")


def step_counts(num_patches: int, steps: int) -> np.ndarray:
    """How many patches are changed after each of `steps` steps: ceil(k * P / steps), k = 0..steps."""
    if steps < 1 or num_patches < 1:
        raise ValueError(f"need at least 1 step and 1 patch, got {steps} steps and {num_patches} patches")
    k = np.arange(steps + 1)
    return -(-k * num_patches // steps)


def blur(images: np.ndarray) -> np.ndarray:
    """The insertion curve's start: RISE's Gaussian blur (11 px, sigma 5 at 224 px) scaled to the height.

    The kernel stays odd and at least 3 pixels, sigma at least 1, so that
    small test images are blurred too.
    """
    images = np.asarray(images)
    height = images.shape[1]
    size = max(3, int(round(11 * height / 224)))
    size += 1 - size % 2
    sigma = max(1.0, 5.0 * height / 224)
    return np.stack([cv2.GaussianBlur(np.ascontiguousarray(im), (size, size), sigma) for im in images])


def _preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 model inputs in [-1, 1], as vit_keras' `preprocess_inputs`."""
    return np.asarray(images).astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _ranks(order: np.ndarray) -> np.ndarray:
    """(N, P) patch orders -> each patch's position in its order (the inverse permutation)."""
    ranks = np.empty_like(order, dtype=np.int32)
    positions = np.broadcast_to(np.arange(order.shape[1], dtype=np.int32), order.shape)
    np.put_along_axis(ranks, order, positions, axis=1)
    return ranks


def _predict(predict: Predict, inputs: np.ndarray, batch_size: int, uint8: bool = False) -> np.ndarray:
    """Probabilities of `inputs` in batches of `batch_size` (uint8 ones preprocessed batch by batch)."""
    out = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        probs = np.asarray(predict(_preprocess(batch) if uint8 else batch))
        if probs.ndim != 2 or len(probs) != len(batch):
            raise ValueError(f"predict gave shape {probs.shape} for {len(batch)} inputs; expected (batch, classes)")
        out.append(probs)
    return np.concatenate(out)


# ------------------------------------------------------------ perturbation
def _check_inputs(images: np.ndarray, maps: dict[str, np.ndarray], patch: int) -> tuple[int, int]:
    """The patch grid (h, w) that `images` and every map share; a ValueError names what differs."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, H, W, 3), got {images.dtype} {images.shape}")
    height, width = images.shape[1:3]
    if height % patch or width % patch:
        raise ValueError(f"image size {height}x{width} is not a multiple of the patch size {patch}")
    grid = (height // patch, width // patch)
    if not maps:
        raise ValueError("no maps to score")
    for name, values in maps.items():
        if np.shape(values) != (len(images), *grid):
            raise ValueError(f"map {name!r} has shape {np.shape(values)}; expected {(len(images), *grid)}")
    return grid


def _job_ranks(maps: dict[str, np.ndarray]) -> np.ndarray:
    """(N, methods, 3, P) patch ranks per photo, method and kind (deletion, negative, insertion)."""
    per_method = []
    for values in maps.values():
        most_first = _ranks(patch_order(values, descending=True))
        least_first = _ranks(patch_order(values, descending=False))
        per_method.append(np.stack([most_first, least_first, most_first], axis=1))
    return np.stack(per_method, axis=1)


def _perturbed(originals: np.ndarray, blurred: np.ndarray, photo: np.ndarray, insertion: np.ndarray,
               ranks: np.ndarray, counts: np.ndarray, patch: int) -> np.ndarray:
    """Model inputs for J jobs x S steps, (J * S, H, W, 3) float32, built by broadcasting.

    A deletion job sets its changed patches to 0 (the input space's mid-grey);
    an insertion job starts from the blurred photo and puts back the original.
    """
    jobs, height, width = len(photo), originals.shape[1], originals.shape[2]
    x = _preprocess(originals[photo])
    is_insertion = insertion[:, None, None, None]
    base = np.where(is_insertion, _preprocess(blurred[photo]), x)
    fill = np.where(is_insertion, x, np.float32(0.0))
    changed = (ranks[:, None, :] < counts[None, :, None]).reshape(jobs, len(counts), height // patch, -1)
    pixels = np.repeat(np.repeat(changed, patch, axis=2), patch, axis=3)
    out = np.where(pixels[..., None], fill[:, None], base[:, None])
    return out.reshape(-1, height, width, 3)


def _interior(predict: Predict, images: np.ndarray, blurred: np.ndarray, ranks: np.ndarray, classes: np.ndarray,
              counts: np.ndarray, patch: int, batch_size: int) -> np.ndarray:
    """The predicted class's probability at the interior steps, (N, methods, 3, len(counts)).

    Jobs (photo x method x kind) go in chunks of at most about `batch_size * 4`
    perturbed inputs, so that memory stays bounded whatever the number of photos.
    """
    n, methods, kinds, patches = ranks.shape
    flat = ranks.reshape(-1, patches)
    photo = np.repeat(np.arange(n), methods * kinds)
    insertion = np.tile(np.arange(kinds) == KINDS.index("insertion"), n * methods)
    out = np.empty((len(flat), len(counts)))
    per_chunk = max(1, (4 * batch_size) // len(counts))
    for start in range(0, len(flat), per_chunk):
        jobs = slice(start, start + per_chunk)
        inputs = _perturbed(images, blurred, photo[jobs], insertion[jobs], flat[jobs], counts, patch)
        probs = _predict(predict, inputs, batch_size)
        target = np.repeat(classes[photo[jobs]], len(counts))
        out[jobs] = probs[np.arange(len(probs)), target].reshape(-1, len(counts))
    return out.reshape(n, methods, kinds, len(counts))


def perturbation_curves(predict: Predict, images: np.ndarray, maps: dict[str, np.ndarray], patch: int,
                        steps: int = 16, batch_size: int = 256, classes: np.ndarray | None = None,
                        ) -> tuple[dict[str, dict[str, np.ndarray]], np.ndarray]:
    """Deletion, insertion and negative curves of every map: {method: {kind: (N, steps + 1)}}, classes.

    `images`: uint8 (N, H, W, 3) at the model's size; `predict`: float32 model
    inputs (B, H, W, 3) -> probabilities (B, classes). Each curve is the
    probability of the photo's class (`classes`, default its prediction on
    the untouched photo) after each step, index 0 the start.

    Deletion sets patches to 0 in the model's input space, which is
    mid-grey (pixel 127.5), not black, most relevant first; negative does
    the same least relevant first; insertion starts from `blur(images)` and
    puts the original pixels back, most relevant first. After step k,
    ceil(k * P / steps) of the P patches are changed. The endpoints are the
    same for every method (untouched, all grey, blurred), so they are
    predicted once per photo; only the interior steps are per method.
    """
    images = np.asarray(images)
    _check_inputs(images, maps, patch)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    counts = step_counts(images.shape[1] * images.shape[2] // patch**2, steps)
    blurred = blur(images)
    original = _predict(predict, images, batch_size, uint8=True)
    classes = original.argmax(axis=1) if classes is None else np.broadcast_to(np.asarray(classes, int), (len(images),))
    rows = np.arange(len(images))
    start = original[rows, classes]
    # the all-grey input is the same for every photo: one prediction serves them all
    end = _predict(predict, np.zeros((1, *images.shape[1:]), np.float32), 1)[0, classes]
    blurred_start = _predict(predict, blurred, batch_size, uint8=True)[rows, classes]
    middle = np.empty((len(images), len(maps), len(KINDS), 0))
    if steps > 1:
        middle = _interior(predict, images, blurred, _job_ranks(maps), classes, counts[1:-1], patch, batch_size)
    ends = {"deletion": (start, end), "negative": (start, end), "insertion": (blurred_start, start)}
    curves = {}
    for m, method in enumerate(maps):
        curves[method] = {kind: np.concatenate([ends[kind][0][:, None], middle[:, m, KINDS.index(kind)],
                                                ends[kind][1][:, None]], axis=1) for kind in KINDS}
    return curves, np.asarray(classes)


# ------------------------------------------------------------ maps
def random_maps(n: int, grid: tuple[int, int], seed: int) -> np.ndarray:
    """Uniform random maps (n, h, w), the same for the same seed: the baseline any method must beat."""
    return np.random.default_rng(seed).random((n, *grid))


def gaussian_maps(n: int, grid: tuple[int, int]) -> np.ndarray:
    """A centred Gaussian (sigma a quarter of each side) for every photo: the centre-bias baseline."""
    rows = (np.arange(grid[0]) - (grid[0] - 1) / 2) / (grid[0] / 4)
    cols = (np.arange(grid[1]) - (grid[1] - 1) / 2) / (grid[1] / 4)
    one = np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2))
    return np.repeat(one[None], n, axis=0)


def _rollout_key(fusion: str, ratio: float) -> str:
    """`rollout-mean`, `rollout-max-discard0.9`, ..."""
    return f"rollout-{fusion}" if ratio == 0 else f"rollout-{fusion}-discard{ratio:g}"


def method_maps(explainer, images: np.ndarray, head_fusions: Sequence[str] = ("mean", "max", "min"),
                discard_ratios: Sequence[float] = (0.0, 0.9), seed: int = 0, class_index=None,
                batch_size: int = 32) -> dict[str, np.ndarray]:
    """Every map to compare, {method: (N, h, w) float64}, from an `AttentionExplainer`.

    Rollouts for each head fusion and discard ratio (one forward pass per
    fusion), the class-specific rollout (only for a classifier, not a bare
    backbone), the last layer's class-token attention averaged over heads
    and per head, and the random and Gaussian baselines.
    """
    grid = tuple(explainer.grid)
    out: dict[str, np.ndarray] = {}
    summary = None
    for fusion in head_fusions:
        summary = explainer.summarize(images, fusion, batch_size)
        for ratio in discard_ratios:
            out[_rollout_key(fusion, ratio)] = grid_masks(rollout_fused(summary.fused, ratio), grid)
    if summary is None:
        summary = explainer.summarize(images, "mean", batch_size)
    if explainer.has_head:
        maps = explainer.class_rollout(images, class_index, batch_size=batch_size)
        out["class-rollout"] = np.asarray(maps.grid, np.float64)
    heads = np.asarray(summary.cls_heads[:, -1, :, 1:], np.float64)
    heads = heads.reshape(len(heads), heads.shape[1], *grid)
    out["last-layer"] = heads.mean(axis=1)
    for h in range(heads.shape[1]):
        out[f"last-layer-head{h}"] = heads[:, h]
    n = len(heads)
    out["random"] = random_maps(n, grid, seed)
    out["gaussian"] = gaussian_maps(n, grid)
    return out


# ------------------------------------------------------------ localisation
def _inside(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, H, W) True on the pixels (x, y) with x0 <= x < x1 and y0 <= y < y1."""
    boxes = np.asarray(boxes, dtype=np.float64)
    ys = np.arange(image_size[0])[None, :, None]
    xs = np.arange(image_size[1])[None, None, :]
    x0, y0, x1, y1 = (boxes[:, k, None, None] for k in range(4))
    return (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)


def pointing_hits(maps: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N,) bool: the bilinearly upsampled map's maximum pixel lies inside the photo's box.

    Boxes are (x0, y0, x1, y1) in pixels of `image_size` (H, W), inclusive-exclusive.
    """
    up = upsample(np.asarray(maps, dtype=np.float64), image_size)
    peak = up.reshape(len(up), -1).argmax(axis=1)
    return _inside(boxes, image_size).reshape(len(up), -1)[np.arange(len(up)), peak]


def mass_ratio(maps: np.ndarray, boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N,) share of the upsampled map's mass inside the box / the box's share of the pixels.

    1 is no better than a uniform map; NaN where the map has no mass or the
    box holds no pixel.
    """
    up = upsample(np.asarray(maps, dtype=np.float64), image_size)
    inside = _inside(boxes, image_size)
    mass = up.sum(axis=(1, 2))
    share = np.divide((up * inside).sum(axis=(1, 2)), mass, out=np.full(len(up), np.nan), where=mass > 0)
    area = inside.mean(axis=(1, 2))
    return np.divide(share, area, out=np.full(len(up), np.nan), where=area > 0)


def scale_boxes(boxes: np.ndarray, from_sizes: np.ndarray, to_size: tuple[int, int]) -> np.ndarray:
    """Boxes in each photo's own pixels -> pixels of the model's size.

    `from_sizes`: (N, 2) or one (2,) (height, width) of the photos as the
    boxes were drawn; `to_size`: (height, width) of the model's input.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = np.broadcast_to(np.asarray(from_sizes, dtype=np.float64), (len(boxes), 2))
    sy, sx = to_size[0] / sizes[:, 0], to_size[1] / sizes[:, 1]
    return boxes * np.stack([sx, sy, sx, sy], axis=1)


# ------------------------------------------------------------ tables
def scores_table(files: Sequence[str], curves: dict[str, dict[str, np.ndarray]], classes: np.ndarray,
                 class_names: Sequence[str]) -> pd.DataFrame:
    """One row per photo and method, photos-major (each photo's methods together, in `curves`' order):
    file, method, deletion_auc, insertion_auc, negative_auc, predicted (the class name)."""
    methods = list(curves)
    aucs = {kind: np.stack([rise_auc(curves[m][kind]) for m in methods], axis=1) for kind in KINDS}
    n = len(files)
    return pd.DataFrame({
        "file": np.repeat(np.asarray(files, dtype=object), len(methods)),
        "method": np.tile(np.asarray(methods, dtype=object), n),
        "deletion_auc": aucs["deletion"].ravel(),
        "insertion_auc": aucs["insertion"].ravel(),
        "negative_auc": aucs["negative"].ravel(),
        "predicted": np.repeat(np.asarray(class_names, dtype=object)[np.asarray(classes)], len(methods)),
    })


def _per_photo(scores: pd.DataFrame, column: str, methods: list[str]) -> np.ndarray:
    """(photos, methods) values of one column, photos in their order of appearance."""
    photo = scores.groupby("method", sort=False).cumcount()
    return scores.assign(photo=photo).pivot(index="photo", columns="method", values=column)[methods].to_numpy(float)


def summary_table(scores: pd.DataFrame, seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """Per method (in order of appearance): mean AUCs with bootstrap 95% percentile intervals over photos,
    `score` = insertion - deletion with its interval, `rank` (1 = best score), and the means of
    `pointing` and `mass_ratio` when the scores have them.

    Every method is resampled with the same photo indices (seeded), so the
    intervals of two methods compare the same resampled photo sets.
    """
    methods = list(dict.fromkeys(scores["method"]))
    sizes = scores.groupby("method", sort=False).size()
    if sizes.nunique() != 1:
        raise ValueError(f"methods score different numbers of photos: {sizes.to_dict()}")
    n = int(sizes.iloc[0])
    picks = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    values = {f"{kind}_auc": _per_photo(scores, f"{kind}_auc", methods) for kind in KINDS}
    values["score"] = values["insertion_auc"] - values["deletion_auc"]
    out = pd.DataFrame({"method": methods, "photos": n})
    for column in ("deletion_auc", "insertion_auc", "negative_auc", "score"):
        boot = values[column][picks].mean(axis=1)
        out[column] = values[column].mean(axis=0)
        out[f"{column}_low"], out[f"{column}_high"] = np.percentile(boot, [2.5, 97.5], axis=0)
    out["rank"] = out["score"].rank(ascending=False, method="min").astype(int)
    for column in ("pointing", "mass_ratio"):
        if column in scores.columns:
            out[column] = _per_photo(scores, column, methods).mean(axis=0)
    return out
