"""GlyphsDataset: the classes (many scripts, no digits), the acquisition (8×8, 17 grey
levels), determinism, and that the images carry their class (a plain classifier learns it)."""
import unicodedata

import pytest
import torch
import torch.nn.functional as F

from ptcore.data import GlyphsDataset, dataset_from_spec, glyph_characters, train_val_test_split
from ptcore.data.glyphs import _gaussian_blur

CHARS = glyph_characters()


def test_classes_span_scripts_without_digits():
    assert len(CHARS) >= 300 and len(set(CHARS)) == len(CHARS)
    assert not [c for c in CHARS if unicodedata.category(c).startswith("N") or c.isdigit()]
    scripts = {unicodedata.name(c).split()[0] for c in CHARS}
    assert {"LATIN", "GREEK", "CYRILLIC", "HEBREW", "ARMENIAN", "GEORGIAN"} <= scripts
    # Letters that render alike across scripts are one class: Latin A stands for them.
    assert "A" in CHARS and "\u0391" not in CHARS and "\u0410" not in CHARS


def test_images_are_8x8_with_17_grey_levels_and_balanced_classes():
    ds = GlyphsDataset(300, 8, seed=1, characters=CHARS[:30])
    assert ds.images.shape == (300, 1, 8, 8) and ds.classes == list(CHARS[:30])
    levels = ds.images * 16
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 16
    assert len(levels.unique()) > 10  # grey levels, not a binary image
    assert torch.bincount(ds.targets).tolist() == [10] * 30
    assert len(ds.fonts) == 300 and len(set(ds.fonts)) > 10
    x, y = ds[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_deterministic_given_the_seed():
    a = GlyphsDataset(64, 16, seed=5, characters=CHARS[40:60])
    b = GlyphsDataset(64, 16, seed=5, characters=CHARS[40:60])
    c = GlyphsDataset(64, 16, seed=6, characters=CHARS[40:60])
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.images, c.images)
    assert a.deterministic  # frozen features of it can be cached


def test_resized_like_the_digits():
    small = GlyphsDataset(20, 8, seed=2, characters=CHARS[:5])
    big = GlyphsDataset(20, 16, seed=2, characters=CHARS[:5])
    expected = F.interpolate(small.images, size=(16, 16), mode="bilinear",
                             align_corners=False).clamp(0, 1)
    torch.testing.assert_close(big.images, expected)


def test_a_linear_classifier_learns_the_characters():
    """Augmentation varies the images, yet they carry their class: logistic regression on
    the 64 pixels, trained on 80% of 3,000 images of 20 characters, far beats chance (5%)."""
    from sklearn.linear_model import LogisticRegression

    ds = GlyphsDataset(3000, 8, seed=0, characters=CHARS[::19][:20])
    train, _, test = train_val_test_split(ds, 0.0, 0.2, seed=0)
    x = ds.images.flatten(1).numpy()
    clf = LogisticRegression(max_iter=300).fit(x[train.indices], ds.targets[train.indices])
    assert clf.score(x[test.indices], ds.targets[test.indices]) > 0.5


def test_blur_matches_a_float64_2d_reference():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 12, 12)
    sigma = torch.tensor([0.4, 1.0, 1.6])
    got = _gaussian_blur(x, sigma)
    t = torch.arange(-3, 4, dtype=torch.float64)
    for i in range(3):
        k1 = torch.exp(-t ** 2 / (2 * float(sigma[i]) ** 2))
        k2 = torch.outer(k1, k1) / k1.sum() ** 2
        ref = F.conv2d(x[i:i + 1].double(), k2[None, None], padding=3)
        torch.testing.assert_close(got[i:i + 1].double(), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": 0}, "size must be a positive int"),
    ({"image_size": 4}, "image_size must be an int >= 8"),
    ({"characters": ["7"]}, "characters must be distinct classes"),
    ({"characters": ["A", "A"]}, "characters must be distinct classes"),
    ({"characters": []}, "characters must be distinct classes"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GlyphsDataset(**{"size": 10, **kwargs})


def test_seed_must_be_an_int():
    with pytest.raises(TypeError, match="seed must be an int"):
        GlyphsDataset(10, seed=1.5)


def test_dataset_spec_names_glyphs(monkeypatch):
    made = {}

    def fake(**kw):
        made.update(kw)
        return "glyphs"

    monkeypatch.setattr("ptcore.data.glyphs.GlyphsDataset", fake)
    assert dataset_from_spec("glyphs", image_size=12) == "glyphs" and made == {"image_size": 12}
