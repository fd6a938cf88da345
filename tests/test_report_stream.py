"""The predictions page is written as it is rendered: the same page as a
whole render, with memory that does not grow with the number of predictions."""

from __future__ import annotations

import json
import re
import tracemalloc
from html import unescape

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import CLASS_NAMES
from vit_flowers import report
from vit_flowers.report import AttentionImages, AttentionSet, write_prediction_report


def photos(folder, count: int = 8) -> list[str]:
    """A few noisy photos (thumbnails of a realistic size, about 10 KB each as JPEG)."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(count):
        path = folder / f"p{k}.png"
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(path)
        out.append(str(path))
    return out


def table_of(files: list[str], rows: int) -> pd.DataFrame:
    from vit_flowers.predict import predictions_table

    probs = np.random.default_rng(1).dirichlet(np.ones(len(CLASS_NAMES)), rows).astype(np.float32)
    true = [CLASS_NAMES[k % len(CLASS_NAMES)] for k in range(rows)]
    return predictions_table([files[k % len(files)] for k in range(rows)], true, probs, CLASS_NAMES)


def attention_for(rows: int, every: int = 10) -> AttentionSet:
    uri = report.encode_jpeg(np.full((32, 32, 3), 90, np.uint8))
    return AttentionSet(images={i: AttentionImages(photo=uri, overlay=uri, class_label="<roses>")
                                for i in range(0, rows, every)}, note="some")


def test_streamed_page_equals_a_whole_render(tmp_path):
    files = photos(tmp_path)
    table = table_of(files, 600)  # more than one chunk of cards
    attention = attention_for(600)
    page = write_prediction_report(tmp_path / "out", table, None, None, CLASS_NAMES, attention=attention)
    context = report.predictions_context(table, None, None, CLASS_NAMES, attention)
    whole = report.render("predictions.html", page="predictions", title="Predictions", subtitle="", **context)
    text = page.read_text(encoding="utf-8")
    assert text == whole
    assert "\x00" not in text
    ids = [int(v) for v in re.findall(r'<article class="card[^"]*"[^>]*\bdata-i="(\d+)"', text)]
    assert ids == list(range(600))
    assert text.count('src="data:image/jpeg;base64,') == 600  # every card has its thumbnail
    data = json.loads(unescape(re.search(r'id="attention-data">(.*?)</script>', text, re.S).group(1)))
    expected = {str(i): {"photo": a.photo, "overlay": a.overlay, "class_map": None, "class_label": "<roses>"}
                for i, a in attention.images.items()}
    assert data == expected
    assert "<roses>" not in text.split('id="attention-data">', 1)[1].split("</script>", 1)[0]  # escaped in the JSON


def peak_bytes(tmp_path, files, rows: int) -> tuple[int, int]:
    table = table_of(files, rows)
    attention = AttentionSet()
    out = tmp_path / f"out{rows}"
    tracemalloc.start()
    try:
        page = write_prediction_report(out, table, None, None, CLASS_NAMES, attention=attention)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, page.stat().st_size


def test_page_memory_does_not_grow_with_the_predictions(tmp_path):
    """Four times the predictions: four times the file, not four times the
    memory (a page rendered whole holds every thumbnail twice over)."""
    files = photos(tmp_path)
    small_peak, small_size = peak_bytes(tmp_path, files, 600)
    large_peak, large_size = peak_bytes(tmp_path, files, 2400)
    assert large_size > 3.5 * small_size
    assert large_peak < 1.2 * small_peak, (small_peak, large_peak)  # a chunk of decoded thumbnails, not the page


def test_cards_know_their_length_and_make_each_card_once(tmp_path):
    files = photos(tmp_path, 3)
    table = table_of(files + [str(tmp_path / "gone.jpg")], 10)
    cards = report.Cards(table, CLASS_NAMES, None, {4: None}, chunk_size=3)
    assert len(cards) == 10
    made = list(cards)
    assert [c["id"] for c in made] == list(range(10))
    assert [c["thumb"] is None for c in made] == [k % 4 == 3 for k in range(10)]  # the missing file: no thumbnail
    assert [c["attention"] for c in made] == [k == 4 for k in range(10)]
    assert list(cards) == made  # iterated again (a template may): the same cards


@pytest.mark.parametrize("value", [{}, {"a": "</script><b>&"}, {"1": {"x": [1, 2.5, None]}}])
def test_streamed_json_is_page_json(value):
    import io

    out = io.StringIO()
    report.write_json_object(out, value.items())
    assert out.getvalue() == str(report.page_json(value))


def test_spilled_attention_images_read_back_as_stored():
    import os

    images = report.SpilledImages()
    odd = os.fsdecode(b"caf\xe9")  # a class label may come from an undecodable folder name
    images[3] = AttentionImages(photo="data:a", overlay="data:b")
    images[1] = AttentionImages(photo="data:c", overlay="data:d", class_map="data:e", class_label=odd)
    assert len(images) == 2 and 3 in images and 2 not in images and sorted(images) == [1, 3]
    assert images[1] == AttentionImages(photo="data:c", overlay="data:d", class_map="data:e", class_label=odd)
    assert images[3].class_map is None and images[3].overlay == "data:b"
    images[3] = AttentionImages(photo="data:f", overlay="data:g")  # a key written again: the last one counts
    assert images[3].photo == "data:f" and len(images) == 2
    with pytest.raises(KeyError):
        images[7]
