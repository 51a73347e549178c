"""Glyphs: characters of many scripts rendered from the fonts matplotlib ships, a large and
varied pretraining source that needs no download.

Each (character, font) pair is rasterised once with FreeType (matplotlib's ``FT2Font``),
cropped and fitted into a 32×32 box; every sample is then one of those masters pushed
through a random affine map, blur, noise and a random ink threshold (thinner or bolder
strokes) with batched torch ops, and reduced the way the UCI handwritten digits were
acquired: a 32×32 binary bitmap counted in 4×4 blocks, i.e. 8×8 images with 17 grey levels
(0…16). So a backbone pretrained here sees the target's resolution and grey levels, never
its classes: digits (and characters that render like one) are excluded.
"""
from __future__ import annotations

import functools
import os
import unicodedata

import torch
import torch.nn.functional as F

from ptcore.data.digits import IMAGENET_MEAN, IMAGENET_STD, TensorImageDataset

__all__ = ["GLYPH_FONTS", "glyph_characters", "GlyphsDataset"]

_MASTER = 32  # master and bitmap side, as in the UCI digits' acquisition
_BOX = 29     # the glyph's longer side inside the master: a margin for the affine map

# matplotlib's bundled fonts: DejaVu and STIX in every weight and slant, Computer Modern
# (whose Unicode map is reliable for Latin letters only, see _usable).
GLYPH_FONTS = (
    "DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
    "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
    "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
    "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
    "cmr10", "cmb10", "cmti10", "cmss10", "cmtt10",
)
# Candidate code points, by script; glyph_characters() keeps those that are not digits,
# that enough fonts draw, and that do not render like an earlier candidate.
_RANGES = (
    (0x41, 0x5A), (0x61, 0x7A),          # Latin
    (0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E),  # ASCII symbols
    (0xA1, 0xBF), (0xC6, 0xC6), (0xD0, 0xD0), (0xD7, 0xD8), (0xDE, 0xDF), (0xE6, 0xE6),
    (0xF0, 0xF0), (0xF7, 0xF8), (0xFE, 0xFE),                # Latin-1 letters and signs
    (0x391, 0x3A9), (0x3B1, 0x3C9),      # Greek
    (0x410, 0x44F),                      # Cyrillic
    (0x531, 0x556), (0x561, 0x586),      # Armenian
    (0x5D0, 0x5EA),                      # Hebrew
    (0x10D0, 0x10F0),                    # Georgian
    (0x2190, 0x2199),                    # arrows
    (0x2200, 0x222B), (0x2260, 0x2265), (0x2282, 0x2287),    # mathematical operators
    (0x25A0, 0x25A1), (0x25B2, 0x25B3), (0x25BC, 0x25BD), (0x25C6, 0x25CB),  # shapes
    (0x2660, 0x2667),                    # card suits
)
_MIN_FONTS = 4        # a class needs this many fonts, or it is too easy to memorise
_SAME_SHAPE = 0.035   # mean |difference| of 8×8 masters under which two characters merge


def _font_path(name: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", f"{name}.ttf")


def _usable(font: str, char: str) -> bool:
    # Computer Modern's cmap maps some code points to other glyphs (TeX encodings).
    return not font.startswith("cm") or char.isascii() and char.isalpha()


def _render(font, char: str) -> torch.Tensor | None:
    """``char`` fitted into a [_MASTER, _MASTER] float master, ink 1; None if blank."""
    font.set_size(64, 72)
    font.set_text(char, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    img = torch.as_tensor(font.get_image().copy(), dtype=torch.float32) / 255.0
    rows, cols = (img > 0.2).any(1).nonzero(), (img > 0.2).any(0).nonzero()
    if len(rows) == 0:
        return None
    img = img[rows[0, 0]:rows[-1, 0] + 1, cols[0, 0]:cols[-1, 0] + 1]
    h, w = img.shape
    scale = _BOX / max(h, w)
    h2, w2 = max(1, round(h * scale)), max(1, round(w * scale))
    img = F.interpolate(img[None, None], size=(h2, w2), mode="area" if scale < 1
                        else "bilinear", **({} if scale < 1 else {"align_corners": False}))
    out = torch.zeros(_MASTER, _MASTER)
    top, left = (_MASTER - h2) // 2, (_MASTER - w2) // 2
    out[top:top + h2, left:left + w2] = img[0, 0].clamp(0, 1)
    return out


@functools.lru_cache(maxsize=None)
def _fonts():
    from matplotlib.ft2font import FT2Font

    return {name: FT2Font(_font_path(name)) for name in GLYPH_FONTS}


def _covers(name: str, char: str) -> bool:
    return ord(char) in _charmap(name) and _usable(name, char)


@functools.lru_cache(maxsize=None)
def _charmap(name: str) -> frozenset:
    return frozenset(_fonts()[name].get_charmap())


@functools.lru_cache(maxsize=None)
def _master(name: str, char: str) -> torch.Tensor | None:
    return _render(_fonts()[name], char)


def _blocks(master: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(master[None], 4)[0]


@functools.lru_cache(maxsize=1)
def glyph_characters() -> tuple[str, ...]:
    """Every class, in a fixed order: the candidate characters that are no digit (nor any
    other number), that at least ``_MIN_FONTS`` fonts draw, and whose 8×8 DejaVu Sans
    rendering differs from every earlier kept character's (Latin A, Greek Alpha and
    Cyrillic A are one class)."""
    kept: list[str] = []
    shapes: list[torch.Tensor] = []
    for lo, hi in _RANGES:
        for code in range(lo, hi + 1):
            char = chr(code)
            if unicodedata.category(char)[0] in "NMCZ" or not unicodedata.name(char, ""):
                continue
            if sum(_covers(f, char) for f in GLYPH_FONTS) < _MIN_FONTS \
                    or not _covers("DejaVuSans", char):
                continue
            master = _master("DejaVuSans", char)
            if master is None:
                continue
            shape = _blocks(master)
            if shapes and (torch.stack(shapes) - shape).abs().mean((1, 2)).min() < _SAME_SHAPE:
                continue
            kept.append(char)
            shapes.append(shape)
    return tuple(kept)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] blurred with a per-sample Gaussian of std ``sigma`` [N] (pixels)."""
    radius = 3
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)  # [N, 2r+1]
    n = x.shape[0]
    y = F.conv2d(x.transpose(0, 1), k.view(n, 1, -1, 1), padding=(radius, 0), groups=n)
    y = F.conv2d(y, k.view(n, 1, 1, -1), padding=(0, radius), groups=n)
    return y.transpose(0, 1)


def _augment(masters: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """[N, 32, 32] masters → [N, 1, 8, 8] images with values k/16: random rotation,
    shear, anisotropic scale and shift; blur; noise; an ink threshold; 4×4 block counts."""
    n = masters.shape[0]

    def u(lo, hi):
        return torch.empty(n).uniform_(lo, hi, generator=g)

    angle, shear = u(-0.25, 0.25), u(-0.3, 0.3)         # radians; x shear per y
    sx, sy = u(0.8, 1.1), u(0.8, 1.1)                 # output/input size
    c, s = torch.cos(angle), torch.sin(angle)
    # affine_grid maps output to input coordinates: the inverse of scale·shear·rotation.
    fwd = torch.stack([torch.stack([sx * (c - shear * s), sx * (-s - shear * c)], -1),
                       torch.stack([sy * s, sy * c], -1)], -2)  # [N, 2, 2]
    inv = torch.linalg.inv(fwd)
    shift = torch.stack([u(-0.12, 0.12), u(-0.12, 0.12)], -1)
    theta = torch.cat([inv, (-inv @ shift[:, :, None])], -1)
    grid = F.affine_grid(theta, [n, 1, _MASTER, _MASTER], align_corners=False)
    x = F.grid_sample(masters[:, None], grid, mode="bilinear", align_corners=False)
    x = _gaussian_blur(x, u(0.3, 1.6))
    x = x + torch.randn(x.shape, generator=g) * u(0.0, 0.15).view(n, 1, 1, 1)
    bitmap = (x > u(0.1, 0.45).view(n, 1, 1, 1)).float()  # lower threshold, bolder stroke
    return F.avg_pool2d(bitmap, 4).mul_(16).round_().div_(16)


class GlyphsDataset(TensorImageDataset):
    """``size`` glyph images of ``characters`` (default: every class of
    :func:`glyph_characters`, balanced), 8×8 with 17 grey levels bilinearly resized to
    ``image_size`` like :func:`~ptcore.data.digits_dataset`, normalised 3-channel tensors.
    The same ``seed`` gives the same images; labels index ``self.classes`` (characters),
    ``self.fonts[i]`` names the font of sample i."""

    def __init__(self, size: int = 30000, image_size: int = 16, *, seed: int = 0,
                 characters=None, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive int, got {size!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        known = glyph_characters()
        chars = list(known if characters is None else characters)
        unknown = [c for c in chars if c not in known]
        if not chars or unknown or len(set(chars)) != len(chars):
            raise ValueError(f"characters must be distinct classes of glyph_characters(), "
                             f"got unknown {unknown[:10]} of {len(chars)}")
        masters, owner, fonts = [], [], []
        for label, char in enumerate(chars):
            for font in GLYPH_FONTS:
                m = _master(font, char) if _covers(font, char) else None
                if m is not None:
                    masters.append(m)
                    owner.append(label)
                    fonts.append(font)
        masters = torch.stack(masters)
        owner = torch.tensor(owner)
        g = torch.Generator().manual_seed(seed)
        targets = (torch.arange(size) % len(chars))[torch.randperm(size, generator=g)]
        # A font for each sample, uniform among the fonts that draw its character.
        first = torch.searchsorted(owner, torch.arange(len(chars)))
        count = torch.bincount(owner, minlength=len(chars))
        pick = first[targets] + (torch.rand(size, generator=g) * count[targets]).long()
        images = torch.cat([_augment(masters[chunk], g) for chunk in pick.split(4096)])
        if image_size != 8:
            images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                                   align_corners=False).clamp_(0.0, 1.0)
        super().__init__(images, targets, chars, mean=mean, std=std)
        self.fonts = [fonts[i] for i in pick.tolist()]
        self.seed = seed

    def __repr__(self) -> str:
        return (f"GlyphsDataset({len(self)} images, {len(self.classes)} characters, "
                f"{self.images.shape[-1]}px, seed {self.seed})")

