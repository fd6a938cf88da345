"""Tests for vit_flowers.primer parts 1-3: pixel attention, learned query, self-attention, symbolic."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vit_flowers.primer import pixel_attention as pa
from vit_flowers.primer import self_attention as sa
from vit_flowers.primer import symbolic as sy

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """Import scripts/<name>.py as a module (so main(argv) can be called in-process)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def two_colour_image(h: int = 40, w: int = 60) -> np.ndarray:
    """Left half white, right half pink, a pink square in the white half."""
    img = np.zeros((h, w, 3), np.float32)
    img[:, : w // 2] = (255, 255, 255)
    img[:, w // 2:] = (230, 90, 170)
    img[5:10, 5:10] = (230, 90, 170)
    return img


def test_primer_modules_do_not_import_tensorflow():
    code = ("import sys; import vit_flowers.primer.pixel_attention, vit_flowers.primer.symbolic, "
            "vit_flowers.primer.inspection, vit_flowers.primer.self_attention, vit_flowers.primer.learn_query; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'cv2') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- part 1: attention on pixels ----------------------------------------------------------

def test_seed_matrix_is_the_notes_with_the_comma_fixed():
    assert pa.NOTE_W.shape == (3, 8)
    # the note's typo "0.0095. 0.0075" is two entries of the first row
    np.testing.assert_allclose(pa.NOTE_W[0, 4:6], [0.0095, 0.0075])
    np.testing.assert_allclose(pa.NOTE_W[:, 0], [0.0065, -0.0065, 0.0024])
    assert pa.DEFAULT_QUERIES == ((50, 50), (200, 200))


def test_softmax_is_stable_and_shift_invariant():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(7, 9))
    p = pa.softmax_over_pixels(s)
    naive = np.exp(s) / np.exp(s).sum()
    np.testing.assert_allclose(p, naive, rtol=1e-12)
    big = pa.softmax_over_pixels(s * 100 + 5000.0)  # naive exp overflows here
    assert np.all(np.isfinite(big))
    assert big.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(big, pa.softmax_over_pixels(s * 100), rtol=1e-9, atol=1e-300)


def test_pixel_attention_follows_the_notes_formula():
    img = two_colour_image()
    results = pa.pixel_attention(img, [(2, 2), (20, 50)])
    f = img.astype(np.float64) @ pa.NOTE_W.astype(np.float64)
    for r in results:
        y, x = r.query
        scores = f @ f[y, x]
        expected = np.exp(scores) / np.exp(scores).sum()  # the note's code, fine at these scales
        np.testing.assert_allclose(r.probs, expected, rtol=1e-10)
        assert r.probs.sum() == pytest.approx(1.0)
        assert r.normalised.min() == 0.0 and r.normalised.max() == 1.0
        assert r.gray.dtype == np.uint8 and r.gray.min() == 0 and r.gray.max() == 255
        # equal colours get equal attention: the pink square equals the pink half
        assert r.probs[7, 7] == pytest.approx(r.probs[20, 45])
    white, pink = results
    assert white.probs[0, 0] != pytest.approx(pink.probs[0, 0])


def test_constant_image_gives_zero_map_not_nan():
    img = np.full((10, 12, 3), 120.0, np.float32)
    (r,) = pa.pixel_attention(img, [(3, 4)])
    np.testing.assert_allclose(r.probs, 1.0 / 120)
    assert np.all(r.normalised == 0.0)
    assert np.all(r.gray == 0)


@pytest.mark.parametrize("query", [(40, 0), (0, 60), (-1, 5), (5, -1)])
def test_query_outside_the_image_names_the_value(query):
    with pytest.raises(pa.QueryOutOfBounds, match=rf"\({query[0]},{query[1]}\)"):
        pa.pixel_attention(two_colour_image(), [query])


def test_query_attention_script_writes_figure(tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(two_colour_image(80, 100).astype(np.uint8)).save(src)
    script = load_script("query_attention")
    assert script.main([str(src), "--query", "2,3", "--query", "40,70", "--out", str(tmp_path / "o")]) == 0
    with Image.open(tmp_path / "o" / "in_query_attention.png") as fig:
        two = fig.width / fig.height
    assert two > 2  # original + two maps side by side
    assert script.main([str(src), "--query", "2,3", "40,70", "10,10", "--out", str(tmp_path / "o"),
                        "--name", "three.png"]) == 0
    with Image.open(tmp_path / "o" / "three.png") as fig:
        assert fig.width / fig.height > two  # one panel more


def test_query_attention_script_rejects_outside_query(tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(two_colour_image().astype(np.uint8)).save(src)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "query_attention.py"), str(src),
         "--query", "600,3", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert proc.returncode == 2
    assert "600,3" in proc.stderr
    assert not list(tmp_path.glob("*.png")) or list(tmp_path.glob("*.png")) == [src]
    with pytest.raises(SystemExit) as exc:
        load_script("query_attention").build_parser().parse_args([str(src), "--query", "a,b", "--out", "x"])
    assert exc.value.code == 2


# --- part 1b: learning W and q ------------------------------------------------------------

def test_blob_images_have_target_blob_and_less_pink_background():
    from vit_flowers.primer import learn_query as lq

    data = lq.make_blob_images(12, size=32, seed=3, noise=0.0)
    assert data.images.shape == (12, 32, 32, 3) and data.masks.shape == (12, 32, 32)
    target = np.asarray(lq.TARGET_RGB, np.float64)
    for img, mask, (y, x) in zip(data.images, data.masks, data.centres):
        assert mask[y, x] and 10 < mask.sum() < 0.2 * mask.size
        np.testing.assert_allclose(img[mask], np.broadcast_to(target, img[mask].shape))
        pinkness = img[..., 0] - img[..., 1] + img[..., 2]
        assert pinkness[~mask].max() <= pinkness[mask].min() - 90 + 1e-3


def test_keras_layer_computes_the_numpy_attention():
    from vit_flowers.primer import learn_query as lq

    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.01, size=(3, 8))
    q = rng.normal(0, 1, size=8)
    model = lq.build_query_model(w_init=w, q_init=q)
    images = lq.make_blob_images(3, size=16, seed=2).images
    out = np.asarray(model(images))
    assert out.shape == (3, 16, 16)
    np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out, lq.learned_attention(images, w, q), rtol=1e-4, atol=1e-7)


def test_learned_query_puts_more_mass_on_target_than_given():
    from vit_flowers.primer import learn_query as lq

    result = lq.train_query(n_train=256, epochs=10, seed=0)
    assert result.loss[-1] < result.loss[0]
    cmp = lq.compare_given_learned(result, n=48, seed=777)
    given, learned = cmp.given_mass.mean(), cmp.learned_mass.mean()
    assert learned > 0.8
    assert learned > given + 0.15
    assert np.median(cmp.learned_mass) > np.median(cmp.given_mass)


def test_learn_query_script_draws_given_vs_learned(tmp_path, capsys):
    import json

    from PIL import Image

    script = load_script("learn_query")
    rc = script.main(["--out", str(tmp_path), "--n-train", "64", "--epochs", "2", "--show", "2",
                      "--eval", "8", "--json", str(tmp_path / "w.json")])
    assert rc == 0
    with Image.open(tmp_path / "learn_query.png") as fig:
        assert fig.height > fig.width * 0.5  # two rows of three panels
    saved = json.loads((tmp_path / "w.json").read_text())
    assert np.asarray(saved["w"]).shape == (3, 8) and len(saved["q"]) == 8
    assert "given" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["query_attention", "learn_query", "symbolic_attention", "make_inspection"])
def test_every_script_option_has_help(name):
    parser = load_script(name).build_parser()
    for action in parser._actions:
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"


# --- part 2: self-attention by hand -------------------------------------------------------

def test_note_self_attention_is_a_weighted_mean_per_pixel():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    o, a, s = sa.note_self_attention(x)
    assert s.shape == (2, 5, 5) and a.shape == (2, 5, 5) and o.shape == (2, 3, 5)
    np.testing.assert_allclose(s, np.transpose(s, (0, 2, 1)))
    np.testing.assert_allclose(a.sum(axis=-1), 1.0)
    for b in range(2):
        for j in range(5):  # output pixel j: sum_i A[j, i] * X[:, i]
            expected = sum(a[b, j, i] * x[b, :, i].astype(np.float64) for i in range(5))
            np.testing.assert_allclose(o[b, :, j], expected, rtol=1e-12)
    # a constant channel stays constant; the note's X A (not A^T) breaks that
    x[:, 0, :] = 2.0
    o, a, _ = sa.note_self_attention(x)
    np.testing.assert_allclose(o[:, 0, :], 2.0)
    assert np.abs((x.astype(np.float64) @ a)[:, 0, :] - 2.0).max() > 1e-3


def test_image_to_tokens_order_matches_note():
    img = np.arange(2 * 3 * 4).reshape(1, 2, 3, 4)
    t = sa.image_to_tokens(img)
    assert t.shape == (1, 2, 12)
    assert t[0, 1, 2 * 4 + 3] == img[0, 1, 2, 3]


def test_multi_head_is_concat_of_single_heads_and_dense():
    p = sa.random_mha_params(dim=6, heads=2, head_dim=4, seed=5)
    x = np.random.default_rng(6).normal(size=(1, 4, 6))
    out, weights = sa.multi_head_self_attention(x, p)
    assert out.shape == (1, 4, 6) and weights.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(weights.sum(-1), 1.0)
    h0, w0 = sa.single_head_attention(x, p.wq[:, 0], p.wk[:, 0], p.wv[:, 0], p.bq[0], p.bk[0], p.bv[0])
    h1, _ = sa.single_head_attention(x, p.wq[:, 1], p.wk[:, 1], p.wv[:, 1], p.bq[1], p.bk[1], p.bv[1])
    np.testing.assert_allclose(weights[:, 0], w0)
    manual = h0 @ p.wo[0] + h1 @ p.wo[1] + p.bo
    np.testing.assert_allclose(out, manual, rtol=1e-12)


@pytest.mark.parametrize("dim,heads,tokens", [(16, 4, 7), (12, 3, 5)])
def test_numpy_mha_matches_keras_and_vit_keras(dim, heads, tokens):
    r = sa.check_against_keras(dim=dim, heads=heads, tokens=tokens, seed=dim)
    assert r.keras_output <= 1e-5 and r.keras_weights <= 1e-5
    assert r.vit_keras_output <= 1e-5 and r.vit_keras_weights <= 1e-5


def test_keras_weight_copy_round_trips():
    p = sa.random_mha_params(dim=8, heads=2, seed=1)
    layer = sa.keras_mha(p)
    back = sa.params_from_keras_mha(layer)
    for name in ("wq", "bq", "wk", "bk", "wv", "bv", "wo", "bo"):
        np.testing.assert_allclose(getattr(back, name), getattr(p, name), rtol=1e-6, atol=1e-7)
    vit = sa.vit_keras_mhsa(p)
    x = np.random.default_rng(2).normal(size=(1, 3, 8)).astype(np.float32)
    ref, _ = sa.multi_head_self_attention(x, p)
    np.testing.assert_allclose(np.asarray(vit(x)[0]), ref, atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x, x)), ref, atol=1e-5)


# --- part 3: symbolic ---------------------------------------------------------------------

def test_symbols_and_the_notes_printed_expressions():
    x = sy.tokens(2, 2, 2)
    assert x.shape == (2, 4)
    assert str(x[1, 2]) == "x_1_1_0" and str(x[0, 1]) == "x_0_0_1"
    s = sy.gram(x)
    # as printed in note 002
    assert str(s[0, 0]) == "x_0_0_0**2 + x_1_0_0**2"
    assert str(s[0, 1]) == "x_0_0_0*x_0_0_1 + x_1_0_0*x_1_0_1"
    assert str(s[0, 2]) == "x_0_0_0*x_0_1_0 + x_1_0_0*x_1_1_0"
    assert str(s[0, 3]) == "x_0_0_0*x_0_1_1 + x_1_0_0*x_1_1_1"
    assert str(s[1, 1]) == "x_0_0_1**2 + x_1_0_1**2"
    assert str(s[1, 2]) == "x_0_0_1*x_0_1_0 + x_1_0_1*x_1_1_0"
    assert str(sy.note_output(x)[0, 0]) == (
        "x_0_0_0*(x_0_0_0**2 + x_1_0_0**2) + x_0_0_1*(x_0_0_0*x_0_0_1 + x_1_0_0*x_1_0_1)"
        " + x_0_1_0*(x_0_0_0*x_0_1_0 + x_1_0_0*x_1_1_0) + x_0_1_1*(x_0_0_0*x_0_1_1 + x_1_0_0*x_1_1_1)"
    )
    arrs = sy.note_arrays()
    assert arrs["S"].shape == (1, 4, 4) and arrs["X_T"].shape == (1, 4, 2)
    assert str(arrs["S"][0, 0, 1]) == str(s[0, 1])


def test_symbolic_softmax_rows_sum_to_one():
    import sympy

    _, a, _ = sy.self_attention(sy.tokens(2, 2, 2))
    assert sympy.simplify(sum(a[0, j] for j in range(4))) == 1
    assert a[0, 0].has(sympy.exp)


@pytest.mark.parametrize("shape", [(2, 2, 2), (3, 2, 3)])
def test_substituted_symbols_equal_numpy(shape):
    values = np.random.default_rng(sum(shape)).normal(size=shape)
    s, a, o = sy.self_attention(sy.tokens(*shape))
    num_o, num_a, num_s = sa.note_self_attention(sa.image_to_tokens(values[None]))
    assert np.abs(sy.substitute(s, values) - num_s[0]).max() <= 1e-9
    assert np.abs(sy.substitute(a, values) - num_a[0]).max() <= 1e-9
    assert np.abs(sy.substitute(o, values) - num_o[0]).max() <= 1e-9
    assert np.abs(sy.substitute(sy.note_output(sy.tokens(*shape)), values)
                  - values.reshape(shape[0], -1) @ num_s[0]).max() <= 1e-9


def test_symbolic_script_prints_like_the_note(capsys):
    assert load_script("symbolic_attention").main(["--numbers", "0"]) == 0
    out = capsys.readouterr().out
    assert "x_0_0_0**2 + x_1_0_0**2,     " in out
    assert "exp(x_0_0_0**2 + x_1_0_0**2)/(" in out
    diffs = [float(line.rsplit(" ", 1)[1]) for line in out.splitlines() if "max abs diff" in line]
    assert len(diffs) == 3 and max(diffs) <= 1e-9
