"""An offline, Omniglot-like data set of font glyphs ("glyphs").

Each class is one Unicode letter that DejaVu Sans (shipped with matplotlib) draws; each instance is
that letter rendered from a randomly chosen DejaVu face (Sans, Serif, Sans Mono, regular or bold,
those that have the letter), its strokes thinned or thickened, and warped by a random affine map
(rotation, scale, shear, translation). Like Omniglot, images are grayscale with a white background
(255) and dark strokes.

Which letters become classes depends only on ``num_classes`` and ``size``: candidates are taken in
a fixed pseudo-random order (so the classes mix scripts) and a candidate is skipped when it is
nearly empty or when its plain rendering at ``size`` is identical, or nearly so (summed absolute
difference of ink below ``MIN_PROTOTYPE_DISTANCE`` pixels), to a class already chosen.
``seed`` drives the per-instance randomness only. The result is cached in ``cache_dir``.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as nnf

from ..._arguments import is_positive_int
from .cache import cached_image_set
from .decode import check_size
from .images import ImageSet

if TYPE_CHECKING:  # matplotlib is imported only when glyphs are rendered, not read from the cache
    from matplotlib.ft2font import FT2Font

# Bump when the rendering changes, so that stale cache files are not reused.
CACHE_VERSION = 1
# Glyphs are drawn (and thinned or thickened) at RENDER_SCALE times the target resolution, warped
# at WARP_SCALE times it, and averaged down: supersampling keeps thin strokes and edges smooth.
RENDER_SCALE = 4
WARP_SCALE = 2
# Font size (em) and largest glyph side, as fractions of the image side.
EM_FRACTION = 0.6
FIT_FRACTION = 0.7
# Candidates with less ink than this (in fully dark target pixels) are skipped, and so are those
# within this summed absolute ink difference of a class already chosen.
MIN_INK_PIXELS = 10.0
MIN_PROTOTYPE_DISTANCE = 4.0
# Unicode letters only: upper, lower, title case and other letters (no marks, digits, spaces).
LETTER_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lo"})
# Fixed seed of the candidate order; it does not depend on the ``seed`` argument.
CANDIDATE_ORDER_SEED = 20150611
FACE_FILES = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
)
# Classes warped per batch, to bound memory.
CHUNK_CLASSES = 64


@dataclass(frozen=True)
class Augmentation:
    """Ranges of the random per-instance changes.

    Attributes
    ----------
    max_rotation : float
        Largest rotation, in degrees, either way.
    scale_range : tuple of float
        Range of the isotropic scale factor.
    max_shear : float
        Largest horizontal shear factor, either way.
    max_translation : float
        Largest translation along each axis, as a fraction of the image side.
    stroke_change_probability : float
        Chance of thinning and, separately, of thickening the strokes (by half a pixel).
    """

    max_rotation: float = 15.0
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_shear: float = 0.2
    max_translation: float = 0.08
    stroke_change_probability: float = 0.3


def glyph_cache_path(cache_dir: str | os.PathLike, num_classes: int, per_class: int, size: int, seed: int) -> Path:
    """Return the cache file that :func:`load_glyphs` uses for these parameters."""
    name = f"glyphs-v{CACHE_VERSION}-c{num_classes}-n{per_class}-s{size}-seed{seed}.pt"
    return Path(cache_dir) / name


def load_glyphs(
    cache_dir: str | os.PathLike,
    num_classes: int = 600,
    per_class: int = 20,
    size: int = 32,
    seed: int = 0,
) -> ImageSet:
    """Generate (or load from the cache) the glyph data set.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Folder of the cache file (see :func:`glyph_cache_path`); created if needed.
    num_classes : int, default 600
        Number of distinct letters (classes).
    per_class : int, default 20
        Number of images per class, as in Omniglot.
    size : int, default 32
        Side of the square images, in pixels (at least 8).
    seed : int, default 0
        Seed of the per-instance augmentation.

    Returns
    -------
    ImageSet
        ``num_classes * per_class`` images, class-major; class names are the codepoints written
        ``"U+XXXX"`` (four to six hex digits), sorted as strings.

    Raises
    ------
    ValueError
        For invalid parameters, or when the fonts hold fewer than ``num_classes`` distinct letters
        at this size.
    """
    _check_parameters(num_classes, per_class, size)
    path = glyph_cache_path(cache_dir, num_classes, per_class, size, seed)
    return cached_image_set(path, lambda: generate_glyphs(num_classes, per_class, size, seed))


def _check_parameters(num_classes: int, per_class: int, size: int) -> None:
    if not (is_positive_int(num_classes) and num_classes >= 2):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not is_positive_int(per_class):
        raise ValueError(f"per_class must be an int >= 1, got {per_class!r}")
    if check_size(size) < 8:
        raise ValueError(f"size must be >= 8 pixels for legible glyphs, got {size}")


def generate_glyphs(
    num_classes: int, per_class: int, size: int, seed: int, augmentation: Augmentation | None = None
) -> ImageSet:
    """Render the glyph data set without touching any cache (see :func:`load_glyphs`).

    Parameters
    ----------
    num_classes, per_class, size, seed : int
        As in :func:`load_glyphs`.
    augmentation : Augmentation, optional
        Ranges of the random changes; the defaults of :class:`Augmentation` when omitted.

    Returns
    -------
    ImageSet
        The generated images.
    """
    _check_parameters(num_classes, per_class, size)
    from matplotlib.ft2font import FT2Font

    faces = [FT2Font(str(path)) for path in font_paths()]
    codepoints = choose_codepoints(faces[0], num_classes, size)
    rng = np.random.default_rng(seed)
    augmentation = augmentation or Augmentation()
    chunks = []
    for start in range(0, num_classes, CHUNK_CLASSES):
        chunk = codepoints[start : start + CHUNK_CLASSES]
        chunks.append(_render_instances(faces, chunk, per_class, size, rng, augmentation))
    images = torch.cat(chunks)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return ImageSet(images, labels, [codepoint_name(c) for c in codepoints])


def codepoint_name(codepoint: int) -> str:
    """Return the class name of a codepoint, e.g. ``"U+0041"``."""
    return f"U+{codepoint:04X}"


def font_paths() -> list[Path]:
    """Return DejaVu Sans followed by the other DejaVu faces that matplotlib ships.

    matplotlib's bundled copy of DejaVu Sans is preferred over a system one, so that the classes do
    not depend on the fonts installed on the machine.
    """
    import matplotlib
    from matplotlib import font_manager

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    primary = bundled / "DejaVuSans.ttf"
    if not primary.is_file():
        primary = Path(font_manager.findfont("DejaVu Sans", fallback_to_default=False))
    others = [bundled / name for name in FACE_FILES if (bundled / name).is_file()]
    return [primary, *others]


def _candidates(face: FT2Font) -> list[int]:
    codepoints = sorted(code for code in face.get_charmap() if unicodedata.category(chr(code)) in LETTER_CATEGORIES)
    order = np.random.default_rng(CANDIDATE_ORDER_SEED).permutation(len(codepoints))
    return [codepoints[i] for i in order]


def choose_codepoints(face: FT2Font, num_classes: int, size: int) -> list[int]:
    """Choose ``num_classes`` letters of ``face`` that render distinctly at ``size``.

    Parameters
    ----------
    face : matplotlib.ft2font.FT2Font
        The font whose charmap provides the candidates (DejaVu Sans).
    num_classes : int
        Number of letters to choose.
    size : int
        Side of the target images, in pixels.

    Returns
    -------
    list of int
        The codepoints, sorted by class name (see :func:`codepoint_name`).
    """
    prototypes = torch.empty(num_classes, size * size)
    chosen: list[int] = []
    for code in _candidates(face):
        prototype = glyph_prototype(face, code, size).flatten()
        if float(prototype.sum()) < MIN_INK_PIXELS:
            continue
        distances = (prototypes[: len(chosen)] - prototype).abs().sum(dim=1)
        if chosen and float(distances.min()) < MIN_PROTOTYPE_DISTANCE:
            continue
        prototypes[len(chosen)] = prototype
        chosen.append(code)
        if len(chosen) == num_classes:
            return sorted(chosen, key=codepoint_name)
    raise ValueError(
        f"num_classes={num_classes} exceeds the {len(chosen)} distinct letters that {face.fname!s} "
        f"renders at size {size}"
    )


def glyph_prototype(face: FT2Font, code: int, size: int) -> torch.Tensor:
    """Return the plain (unaugmented) ink coverage of ``code``, shape ``(size, size)``."""
    return _pool(_master(face, code, size), RENDER_SCALE)


def _master(face: FT2Font, code: int, size: int) -> torch.Tensor:
    """Render ``code`` as ink coverage in [0, 1], centred on a supersampled square canvas."""
    side = size * RENDER_SCALE
    face.set_size(round(EM_FRACTION * side), 72)
    face.set_text(chr(code), 0.0)
    face.draw_glyphs_to_bitmap(antialiased=True)
    bitmap = np.asarray(face.get_image(), dtype=np.float32) / 255.0
    canvas = torch.zeros(side, side)
    rows = np.flatnonzero(bitmap.max(axis=1) > 0)
    cols = np.flatnonzero(bitmap.max(axis=0) > 0)
    if rows.size == 0:
        return canvas
    glyph = torch.from_numpy(bitmap[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].copy())
    glyph = _fit(glyph, round(FIT_FRACTION * side))
    top = (side - glyph.shape[0]) // 2
    left = (side - glyph.shape[1]) // 2
    canvas[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return canvas


def _fit(glyph: torch.Tensor, limit: int) -> torch.Tensor:
    """Shrink ``glyph`` (keeping its aspect ratio) so that neither side exceeds ``limit``."""
    height, width = glyph.shape
    if max(height, width) <= limit:
        return glyph
    factor = limit / max(height, width)
    shape = (max(1, round(height * factor)), max(1, round(width * factor)))
    resized = nnf.interpolate(glyph[None, None], size=shape, mode="bilinear", antialias=True)
    return resized[0, 0].clamp(0.0, 1.0)


def _pool(ink: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ink over ``factor x factor`` blocks of its last two dimensions."""
    height, width = ink.shape[-2:]
    pooled = nnf.avg_pool2d(ink.reshape(-1, 1, height, width), factor)
    return pooled.reshape(*ink.shape[:-2], height // factor, width // factor)


def _to_pixels(ink: torch.Tensor) -> torch.Tensor:
    """Turn ink coverage into ``uint8`` pixels: white (255) background, dark strokes."""
    return ((1.0 - ink.clamp(0.0, 1.0)) * 255.0).round().to(torch.uint8)


def _render_instances(
    faces: list[FT2Font],
    codepoints: list[int],
    per_class: int,
    size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
) -> torch.Tensor:
    """Render ``per_class`` augmented instances of each codepoint, class-major."""
    sources = []
    for code in codepoints:
        sources.extend(_instance_sources(faces, code, per_class, size, rng, augmentation))
    ink = torch.stack(sources).unsqueeze(1)
    theta = torch.from_numpy(_affine_thetas(len(sources), rng, augmentation))
    grid = nnf.affine_grid(theta, list(ink.shape), align_corners=False)
    warped = nnf.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _to_pixels(_pool(warped, WARP_SCALE))


def _instance_sources(
    faces: list[FT2Font],
    code: int,
    per_class: int,
    size: int,
    rng: np.random.Generator,
    augmentation: Augmentation,
) -> list[torch.Tensor]:
    """Pick a face and a stroke change per instance; return the unwarped ink at ``WARP_SCALE``.

    Stroke changes are applied at ``RENDER_SCALE``, where one pixel of grey erosion or dilation
    thins or thickens a stroke by a quarter of a target pixel on each side.
    """
    options = [face for face in faces if face.get_char_index(code)]
    face_picks = rng.integers(0, len(options), size=per_class)
    draws = rng.random(per_class)
    probability = augmentation.stroke_change_probability
    strokes = np.where(draws < probability, -1, np.where(draws > 1.0 - probability, 1, 0))
    masters: dict[int, torch.Tensor] = {}
    variants: dict[tuple[int, int], torch.Tensor] = {}
    sources = []
    for pick, stroke in zip(face_picks.tolist(), strokes.tolist()):
        if pick not in masters:
            masters[pick] = _master(options[pick], code, size)
        if (pick, stroke) not in variants:
            changed = _change_strokes(masters[pick], stroke)
            variants[pick, stroke] = _pool(changed, RENDER_SCALE // WARP_SCALE)
        sources.append(variants[pick, stroke])
    return sources


def _change_strokes(ink: torch.Tensor, stroke: int) -> torch.Tensor:
    """Thin (``stroke=-1``, grey erosion), keep (0) or thicken (1, grey dilation) the strokes."""
    if stroke == 0:
        return ink
    batch = ink[None, None] * stroke
    return (nnf.max_pool2d(batch, 3, stride=1, padding=1) * stroke)[0, 0]


def _affine_thetas(count: int, rng: np.random.Generator, augmentation: Augmentation) -> np.ndarray:
    """Draw random affine maps; return the ``(count, 2, 3)`` sampling matrices of ``affine_grid``.

    The forward map (output = translate @ rotate @ shear @ scale @ input, in the normalised
    coordinates of ``affine_grid``) is inverted, because ``affine_grid`` maps each output pixel to
    the input location it samples.
    """
    angle = np.deg2rad(rng.uniform(-augmentation.max_rotation, augmentation.max_rotation, count))
    scale = rng.uniform(*augmentation.scale_range, count)
    shear = rng.uniform(-augmentation.max_shear, augmentation.max_shear, count)
    shift = rng.uniform(-augmentation.max_translation, augmentation.max_translation, (count, 2))
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.zeros((count, 3, 3))
    forward[:, 0, 0] = scale * cos
    forward[:, 0, 1] = scale * (cos * shear - sin)
    forward[:, 1, 0] = scale * sin
    forward[:, 1, 1] = scale * (sin * shear + cos)
    forward[:, :2, 2] = 2.0 * shift
    forward[:, 2, 2] = 1.0
    return np.linalg.inv(forward)[:, :2, :].astype(np.float32)
