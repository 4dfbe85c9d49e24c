"""dSprites (Matthey et al. 2017): 737,280 images of 2-D shapes from five independent factors.

dSprites (Matthey et al. 2017)
The official file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` is read by
:meth:`DSprites.from_npz` when you have it. Otherwise :meth:`DSprites.procedural`
renders the images on demand with :func:`render_dsprites`, a procedural renderer
built from the specification in ``shared/data/README.md``, section 5 (factor grid,
storage order, geometry measured on the real frames) and tuned against the 320 real
frames of ``shared/data/dsprites/dsprites_gif_frames.npz``.

Measured agreement of :func:`render_dsprites` with those 320 reference frames
(same inferred latents, per frame, then averaged over the frames of a shape):

========  ======  ========  ========  ==============  ==================
shape     frames  mean IoU  min IoU   pixel accuracy  wrong pixels (sum)
========  ======  ========  ========  ==============  ==================
square        64  0.99966   0.98925   0.999969        8
ellipse       64  0.99914   0.99306   0.999939        16
heart        192  0.99884   0.98901   0.999939        48
========  ======  ========  ========  ==============  ==================

(pixel accuracy is over all 64x64 pixels of a frame; 278 of the 320 frames are
pixel-identical to the reference, 40 differ by 1 or 2 pixels and 2 by 4.)

Rendering speed: the full grid of 737,280 images took 31 s (about 23,500 images/s)
on this project's 2-core machine while it was shared with a training run (load
average about 4), i.e. well under a minute on one core. :func:`render_dsprites`
works in chunks of 2,048 images (about 100 MB of temporaries); the output itself
is 4 KB per image, so the whole grid is 3 GB: render it in slices unless you need
it all at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType

import numpy as np

from topicvae.images.data import default_cache_dir

__all__ = [
    "DSPRITES_FACTORS",
    "DSPRITES_FACTOR_NAMES",
    "DSPRITES_FACTOR_SIZES",
    "DSPRITES_NPZ_NAME",
    "DSPRITES_SHAPE_NAMES",
    "DSprites",
    "load_dsprites",
    "render_dsprites",
]


def _read_only(values: np.ndarray) -> np.ndarray:
    values.setflags(write=False)
    return values


#: The five generative factors of dSprites and their values, in storage order
#: (README section 5). The official file also has a colour factor (column 0 of
#: ``latents_classes``) with the single value 1.0 (white); it carries no information
#: and is left out here. Shape values 1, 2, 3 are square, ellipse, heart.
#: Orientation includes both 0 and 2*pi, so classes 0 and 39 give the same images.
DSPRITES_FACTORS = MappingProxyType(
    {
        "shape": _read_only(np.array([1.0, 2.0, 3.0])),
        "scale": _read_only(np.linspace(0.5, 1.0, 6)),
        "orientation": _read_only(np.linspace(0.0, 2 * np.pi, 40)),
        "pos_x": _read_only(np.linspace(0.0, 1.0, 32)),
        "pos_y": _read_only(np.linspace(0.0, 1.0, 32)),
    }
)


DSPRITES_FACTOR_NAMES: tuple[str, ...] = tuple(DSPRITES_FACTORS)


DSPRITES_FACTOR_SIZES: tuple[int, ...] = tuple(len(v) for v in DSPRITES_FACTORS.values())


DSPRITES_SHAPE_NAMES: tuple[str, ...] = ("square", "ellipse", "heart")


DSPRITES_NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"


DSPRITES_IMAGE_SIZE = 64


def _strides(sizes) -> np.ndarray:
    """Row-major strides: the last factor (pos_y) varies fastest."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)


def _check_classes(factor_classes, sizes, what: str = "factor_classes") -> np.ndarray:
    classes = np.asarray(factor_classes)
    if classes.ndim != 2 or classes.shape[1] != len(sizes):
        raise ValueError(f"{what} must be an integer array [n, {len(sizes)}], got shape {classes.shape}.")
    if classes.size and not np.issubdtype(classes.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got dtype {classes.dtype}; cast with .astype(np.int64).")
    classes = classes.astype(np.int64, copy=False)
    bad = (classes < 0) | (classes >= np.asarray(sizes))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{what}[{row}, {col}] = {classes[row, col]} is out of range for factor "
            f"{DSPRITES_FACTOR_NAMES[col]!r} (0..{sizes[col] - 1})."
        )
    return classes


# Geometry, in pixels at scale 1 (README section 5; continuous coordinates, pixel i
# covers [i, i+1) and is "on" when its centre i + 0.5 lies inside the shape).
#
# Square: half-side 9.6. At orientation 0 this gives exactly the README's 20*scale px
# sides (pixel centres 9.5 px from the centre are in, 10.5 px out), and rotated it
# gives the README's raster areas 364..372 px at scale 1 (a true 20-px square would
# stay near 400 px); 9.6 minimises the mismatch with the rotation frames.
_SQUARE_HALF_SIDE = 9.6


# Ellipse: semi-axes 12.76 (horizontal at orientation 0) x 7.22. The README's
# "about 13 x 7" is the raster's bounding box (26 x 14 px); these values, fitted to the
# 64 ellipse frames, reproduce the per-scale areas 76..288 and the rotated frames.
_ELLIPSE_SEMI_AXES = (12.76, 7.22)


# Heart: a star-shaped outline given by its radius as a function of the polar angle
# about the sprite centre, tabulated every 3.75 degrees on the right half, from
# straight up (index 0, the notch between the lobes) clockwise as displayed to straight
# down (index 48, the point), linear in between; the left half is its mirror image.
# Design: two round lobes (circles of radius ~5 centred ~4.7 px either side of the axis,
# ~4 px above the centre) joined to the point (~8.8 px below the centre) by their
# tangents. With its four numbers fitted to the 192 heart frames of
# dsprites_gif_frames.npz that outline still got 1,436 pixels wrong (the real lobes are
# flatter), so it was sampled every 3.75 degrees and the radii themselves fitted (with
# a small smoothness penalty), which leaves 48 wrong pixels. It reproduces the README rasters at
# orientation 0 exactly (bounding box 20 x 17 px and area 222 at scale 1, 10 x 9 and
# 58 at scale 0.5); the areas per scale are 58, 84, 108, 140, 180, 222 (README: 182
# at scale 0.9, the one upright frame still 2 px off).
_HEART_RADII = np.array([
    5.951, 6.310, 7.300, 8.175, 8.895, 9.507, 10.013, 10.417, 10.728, 10.959,
    11.119, 11.216, 11.256, 11.243, 11.178, 11.060, 10.887, 10.660, 10.383, 10.062,
    9.704, 9.320, 8.921, 8.520, 8.132, 7.767, 7.435, 7.139, 6.879, 6.655,
    6.465, 6.303, 6.168, 6.061, 5.981, 5.929, 5.903, 5.904, 5.933, 5.993,
    6.085, 6.209, 6.368, 6.573, 6.843, 7.200, 7.684, 8.363, 9.045,
])  # fmt: skip


_HEART_STEP = np.pi / (len(_HEART_RADII) - 1)


# Each sprite is drawn in a 32 x 32 window around its centre, then pasted into the
# 64 x 64 canvas: a quarter of the work of testing every canvas pixel. The window
# starts 16 px left of / above floor(centre), which keeps it inside the canvas for
# centres in [16, 48], and covers every pixel centre within 15.5 px of the centre.
_WINDOW = 32


_WINDOW_REACH = 15.5


_MAX_SPRITE_RADIUS = max(
    _SQUARE_HALF_SIDE * np.sqrt(2), max(_ELLIPSE_SEMI_AXES), float(_HEART_RADII.max())
)


_RENDER_CHUNK = 2048

if _MAX_SPRITE_RADIUS >= _WINDOW_REACH:  # a guard for whoever edits the geometry above
    raise RuntimeError("dSprites geometry exceeds the rendering window; enlarge _WINDOW.")


def render_dsprites(factor_classes: np.ndarray) -> np.ndarray:
    """Render dSprites images procedurally.

    Parameters
    ----------
    factor_classes : int array [n, 5]
        Class indices of (shape, scale, orientation, pos_x, pos_y), see
        :data:`DSPRITES_FACTORS`.

    Returns
    -------
    numpy.ndarray of uint8, shape [n, 64, 64], values {0, 1}
        Row = y (downwards), column = x (rightwards).

    Notes
    -----
    Following README section 5: the sprite centre is
    ``(cx, cy) = (16 + 32 * pos_x, 16 + 32 * pos_y)`` in continuous pixel coordinates
    (pixel i covers [i, i+1)); a pixel is 1 iff its centre ``p`` lies inside the shape,
    tested in the sprite's own frame ``(u, v) = R(-theta) (p - c) / scale`` with
    ``u = (cos t * dx - sin t * dy) / scale``, ``v = (sin t * dx + cos t * dy) / scale``,
    which turns the sprite counter-clockwise as displayed (row 0 at the top) by
    ``theta = 2 * pi * k / 39`` for orientation class k (class 39 is rendered as class 0,
    so that both give identical images, as in the real data). Shapes, at scale 1:
    square ``max(|u|, |v|) <= 9.6``; ellipse ``(u / 12.76)^2 + (v / 7.22)^2 <= 1``;
    heart ``hypot(u, v) <= r(atan2(v, |u|))`` with ``r`` the tabulated outline
    (see the module source). No anti-aliasing. Rendering is vectorised over chunks of
    2,048 images.
    """
    classes = _check_classes(factor_classes, DSPRITES_FACTOR_SIZES)
    out = np.zeros((len(classes), DSPRITES_IMAGE_SIZE, DSPRITES_IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, len(classes), _RENDER_CHUNK):
        _render_chunk(classes[start : start + _RENDER_CHUNK], out[start : start + _RENDER_CHUNK])
    return out


def _render_chunk(classes: np.ndarray, out: np.ndarray) -> None:
    """Draw the sprites of ``classes`` (validated, [m, 5]) into ``out`` ([m, 64, 64], zeros)."""
    shape = classes[:, 0]
    scale = DSPRITES_FACTORS["scale"][classes[:, 1]]
    # k mod 39 so that 2*pi is computed as exactly 0 (cos/sin of 2*pi are off by 1e-16,
    # which could flip a pixel whose centre lies on an edge).
    theta = (classes[:, 2] % 39) * (2 * np.pi / 39)
    cx = 16 + 32 * DSPRITES_FACTORS["pos_x"][classes[:, 3]]
    cy = 16 + 32 * DSPRITES_FACTORS["pos_y"][classes[:, 4]]
    x0 = np.floor(cx).astype(np.int64) - _WINDOW // 2
    y0 = np.floor(cy).astype(np.int64) - _WINDOW // 2
    centres = np.arange(_WINDOW) + 0.5
    dx = (x0 - cx)[:, None, None] + centres[None, None, :]  # [m, 1, W]: along columns
    dy = (y0 - cy)[:, None, None] + centres[None, :, None]  # [m, W, 1]: along rows
    cos = (np.cos(theta) / scale)[:, None, None]
    sin = (np.sin(theta) / scale)[:, None, None]

    window = np.empty((len(classes), _WINDOW, _WINDOW), dtype=bool)
    for shape_id in np.unique(shape):
        rows = np.flatnonzero(shape == shape_id)
        c, s, x, y = cos[rows], sin[rows], dx[rows], dy[rows]
        u = c * x - s * y
        v = s * x + c * y
        if shape_id == 0:
            window[rows] = np.maximum(np.abs(u), np.abs(v)) <= _SQUARE_HALF_SIDE
        elif shape_id == 1:
            a, b = _ELLIPSE_SEMI_AXES
            window[rows] = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        else:
            window[rows] = _inside_heart(u, v)

    # Paste each window at (y0, x0) through flat indices into the C-contiguous canvas.
    size = DSPRITES_IMAGE_SIZE
    base = np.arange(len(classes)) * size * size + y0 * size + x0
    offsets = (np.arange(_WINDOW) * size)[:, None] + np.arange(_WINDOW)[None, :]
    out.reshape(-1)[base[:, None, None] + offsets[None]] = window


def _inside_heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether (u, v) (sprite frame, v downwards) lies inside the heart outline."""
    rr = u * u + v * v
    inside = rr <= _HEART_RADII.min() ** 2
    # arctan2 is the costly step: only points in the annulus between the smallest and
    # the largest radius need the outline (about a quarter of the window).
    ring = (rr > _HEART_RADII.min() ** 2) & (rr <= _HEART_RADII.max() ** 2)
    uu, vv = u[ring], v[ring]
    # Polar angle from straight up (0) to straight down (pi) on the mirrored right half.
    t = (np.arctan2(vv, np.abs(uu)) + np.pi / 2) / _HEART_STEP
    i = np.minimum(t.astype(np.int64), len(_HEART_RADII) - 2)
    f = t - i
    radius = _HEART_RADII[i] * (1 - f) + _HEART_RADII[i + 1] * f
    inside[ring] = rr[ring] <= radius * radius
    return inside


class DSprites:
    """The dSprites ground truth: images as a function of the generative factors.

    Build it with :meth:`from_npz` (the official file, all images in memory, 3 GB) or
    :meth:`procedural` (images rendered on demand by :func:`render_dsprites`; nothing
    is materialised unless you ask for it, e.g. ``ds.images(ds.factors_of(np.arange(len(ds))))``).

    Attributes
    ----------
    factor_names : list of str
        ``["shape", "scale", "orientation", "pos_x", "pos_y"]`` (colour, a constant, is left out).
    factor_sizes : list of int
        ``[3, 6, 40, 32, 32]`` for the official grid.
    source : str
        ``"npz"`` or ``"procedural"``.
    path : pathlib.Path or None
        The npz file, if any.

    Flat indices follow the official storage order: row-major over the factors, pos_y
    fastest, ``index = factor_classes @ strides`` with strides
    ``[245760, 40960, 1024, 32, 1]`` for the official grid (README section 5, without
    the colour column, whose class is always 0).
    """

    def __init__(
        self,
        imgs: np.ndarray | None = None,
        factor_sizes: tuple[int, ...] | list[int] = DSPRITES_FACTOR_SIZES,
        *,
        source: str = "procedural",
        path: Path | None = None,
    ) -> None:
        self._imgs = imgs
        self.factor_names = list(DSPRITES_FACTOR_NAMES)
        self.factor_sizes = [int(n) for n in factor_sizes]
        self.source = source
        self.path = path

    @classmethod
    def procedural(cls) -> DSprites:
        """The full official grid, rendered lazily by :func:`render_dsprites`."""
        return cls(None, DSPRITES_FACTOR_SIZES, source="procedural")

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str]) -> DSprites:
        """Read the official ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

        Only ``imgs`` and ``latents_classes`` are read, with ``allow_pickle=False``
        (``metadata`` is a pickled Python-2 dict and is ignored). ``latents_classes``
        must list a complete grid over (color, shape, scale, orientation, posX, posY)
        in row-major order with one colour, and ``imgs`` must be [N, 64, 64];
        ``factor_sizes`` are taken from that grid (``[3, 6, 40, 32, 32]`` for the
        official file; a smaller complete grid, e.g. a test fixture, is accepted).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise ValueError(f"path={str(path)!r} does not exist; pass the dSprites .npz file.")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {"imgs", "latents_classes"} - set(npz.files)
                if missing:
                    raise ValueError(f"path={str(path)!r} lacks {sorted(missing)}; is this the dSprites npz?")
                classes = np.asarray(npz["latents_classes"])
                imgs = npz["imgs"]
        except (OSError, EOFError) as exc:
            raise ValueError(f"path={str(path)!r} is not a readable npz file ({exc}).") from None
        if classes.ndim != 2 or classes.shape[1] != 6 or not np.issubdtype(classes.dtype, np.integer) or not len(classes):
            raise ValueError(f"{path}: latents_classes must be an integer array [N, 6], got {classes.dtype} {classes.shape}.")
        if classes.min() < 0 or classes[:, 0].max() != 0:
            raise ValueError(f"{path}: latents_classes must be non-negative with a single colour class 0.")
        sizes = classes.max(axis=0)[1:] + 1
        if np.any(sizes > np.asarray(DSPRITES_FACTOR_SIZES)):
            raise ValueError(f"{path}: factor sizes {sizes.tolist()} exceed the dSprites grid {list(DSPRITES_FACTOR_SIZES)}.")
        if len(classes) != int(np.prod(sizes)) or not np.array_equal(classes[:, 1:] @ _strides(sizes), np.arange(len(classes))):
            raise ValueError(
                f"{path}: latents_classes is not the complete row-major grid of sizes {sizes.tolist()} "
                "(pos_y fastest); this loader needs the official storage order."
            )
        if imgs.shape != (len(classes), DSPRITES_IMAGE_SIZE, DSPRITES_IMAGE_SIZE):
            raise ValueError(f"{path}: imgs has shape {imgs.shape}, expected ({len(classes)}, 64, 64).")
        return cls(imgs.astype(np.uint8, copy=False), tuple(int(n) for n in sizes), source="npz", path=path)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes))

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return f"DSprites(source={self.source!r}, factor_sizes={self.factor_sizes}{where})"

    @property
    def strides(self) -> np.ndarray:
        """int64 [5]: ``index = factor_classes @ strides``."""
        return _strides(self.factor_sizes)

    def index_of(self, factor_classes: np.ndarray) -> np.ndarray:
        """Flat indices (int64 [n]) of factor classes [n, 5]."""
        return _check_classes(factor_classes, self.factor_sizes) @ self.strides

    def factors_of(self, indices: np.ndarray) -> np.ndarray:
        """Factor classes (int64 [n, 5]) of flat indices [n]: the inverse of :meth:`index_of`."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-d integer array, got {idx.dtype} {idx.shape}.")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))][0]
            raise ValueError(f"indices holds {bad}, outside 0..{len(self) - 1}.")
        return (idx[:, None] // self.strides) % np.asarray(self.factor_sizes)

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` factor combinations (int64 [n, 5]), each factor uniform and independent."""
        n = _check_count(n)
        return rng.integers(0, self.factor_sizes, size=(n, len(self.factor_sizes)), dtype=np.int64)

    def images(self, factor_classes: np.ndarray) -> np.ndarray:
        """uint8 images [n, 64, 64] (values {0, 1}) of the given factor classes [n, 5]."""
        if self._imgs is not None:
            return self._imgs[self.index_of(factor_classes)]
        return render_dsprites(factor_classes)

    def sample(
        self,
        n: int,
        rng: np.random.Generator,
        exclude: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random training sample: ``(images [n, 64, 64], factor_classes [n, 5])``.

        Combinations are drawn uniformly with replacement from the grid, less those for
        which ``exclude(factor_classes)`` is True (a boolean mask [m] for an array
        [m, 5]), e.g. the paper's unseen-combination split "no hearts in the right
        half": ``exclude=lambda f: (f[:, 0] == 2) & (f[:, 3] >= 16)``. ``exclude`` is
        evaluated once on the whole grid.
        """
        n = _check_count(n)
        if exclude is None:
            classes = self.sample_factors(n, rng)
        else:
            grid = self.factors_of(np.arange(len(self)))
            mask = np.asarray(exclude(grid))
            if mask.shape != (len(grid),) or mask.dtype != bool:
                raise ValueError(
                    f"exclude must map an array [m, 5] to a boolean mask [m], got {mask.dtype} {mask.shape}."
                )
            allowed = np.flatnonzero(~mask)
            if not len(allowed):
                raise ValueError("exclude leaves out every factor combination; nothing is left to sample.")
            classes = grid[rng.choice(allowed, size=n)]
        return self.images(classes), classes


def _check_count(n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r} must be a non-negative integer.")
    return int(n)


def load_dsprites(
    path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> DSprites:
    """dSprites from the official npz when available, else procedural.

    With ``path``, that file (:meth:`DSprites.from_npz`). Otherwise
    ``<cache base>/dsprites/dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (see
    :func:`default_cache_dir`) when it exists, else :meth:`DSprites.procedural`. The
    result's ``source`` says which (``"npz"`` / ``"procedural"``). Published checksum of
    the official file, for checking a copy by hand: md5 ``7da33b31b13a06f4b04a70402ce90c2e``
    (README section 5; not verified here, so it is not enforced).
    """
    if path is not None:
        return DSprites.from_npz(path)
    cached = default_cache_dir("dsprites", cache_dir) / DSPRITES_NPZ_NAME
    if cached.is_file():
        return DSprites.from_npz(cached)
    return DSprites.procedural()
