"""Image data sets for the image recipes: MNIST and Fashion-MNIST, and the download cache.

MNIST and Fashion-MNIST
    :func:`load_idx_dataset` reads the four standard IDX ``.gz`` files, from a directory
    (``root=``) or from a cache that it fills by downloading from the canonical mirrors,
    checking each file's md5 (see ``shared/data/README.md``, sections 3 and 4, for the
    format and the checksums). The result is an :class:`ImageDataset`.

dSprites
    :mod:`topicvae.images.dsprites` (the official file or a procedural renderer).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "IDX_DATASETS",
    "IDX_FILES",
    "IdxSource",
    "ImageDataset",
    "default_cache_dir",
    "load_idx_dataset",
    "read_idx",
]

# ---------------------------------------------------------------------------
# Cache location
# ---------------------------------------------------------------------------

CACHE_ENV_VAR = "TOPICVAE_DATA"


def default_cache_dir(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of data set ``name``: ``<base>/<name>``.

    ``<base>`` is ``cache_dir`` when given, else the environment variable
    ``TOPICVAE_DATA`` when set, else ``~/.cache/topicvae``. One base thus serves every
    data set (``<base>/mnist``, ``<base>/fashion-mnist``, ``<base>/dsprites``).
    """
    if cache_dir is not None:
        base = Path(cache_dir)
    elif os.environ.get(CACHE_ENV_VAR):
        base = Path(os.environ[CACHE_ENV_VAR])
    else:
        base = Path.home() / ".cache" / "topicvae"
    return base.expanduser() / name


# ---------------------------------------------------------------------------
# MNIST and Fashion-MNIST (IDX files)
# ---------------------------------------------------------------------------

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
IDX_IMAGE_SHAPE = (28, 28)

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX data set comes from: mirrors (tried in order), md5 of each ``.gz``, class names."""

    mirrors: tuple[str, ...]
    md5: dict[str, str]
    label_names: tuple[str, ...]


# The md5s are those of the canonical .gz files (torchvision's MNIST.resources and the
# Fashion-MNIST README); checked against the byte-identical copies in shared/data.
IDX_DATASETS: dict[str, IdxSource] = {
    "mnist": IdxSource(
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        label_names=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": IdxSource(
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        label_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
}

_DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)  # numpy fields make field-wise == ambiguous
class ImageDataset:
    """Labelled grey-scale images.

    Attributes
    ----------
    images : numpy.ndarray of uint8, shape [N, H, W]
        Pixel intensities 0 (background) .. 255 (ink).
    labels : numpy.ndarray of int64, shape [N]
        Class id of each image: an index into ``label_names``.
    label_names : list of str
        Class names.
    name : str
        Data set name, e.g. ``"mnist"``.
    split : str
        ``"train"`` or ``"test"`` (empty when not applicable).
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    name: str
    split: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.images, np.ndarray) or self.images.ndim != 3 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be a uint8 array [N, H, W], got {type(self.images).__name__} "
                f"{getattr(self.images, 'dtype', '')} {getattr(self.images, 'shape', '')}; convert it first."
            )
        if not isinstance(self.labels, np.ndarray) or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must be an array of shape ({len(self.images)},) to match images, "
                f"got shape {getattr(self.labels, 'shape', None)}."
            )

    def __len__(self) -> int:
        return len(self.images)

    def as_float(self) -> np.ndarray:
        """float32 intensities in [0, 1]: ``images / 255``."""
        return self.images.astype(np.float32) / np.float32(255.0)

    def binarize(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Binary images (float32 0/1) for a Bernoulli likelihood.

        With ``rng=None``: ``x > 0.5`` where ``x = images / 255`` (a fixed threshold; no
        uint8 value equals 0.5 exactly). With a numpy ``Generator``: stochastic
        binarization, each pixel 1 with probability ``x`` (``rng.random() < x``), as in
        the usual "dynamically binarized MNIST"; call it again for a fresh draw.
        """
        x = self.as_float()
        if rng is None:
            return (x > 0.5).astype(np.float32)
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy Generator or None, got {type(rng).__name__}; use np.random.default_rng(seed).")
        return (rng.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def read_idx(path: str | os.PathLike[str], expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file (gzip-compressed when its name ends in ``.gz``) of unsigned bytes.

    Format (big-endian): a 4-byte magic number ``0x0000 08 <ndim>`` (0x08 = unsigned
    byte), then ``ndim`` uint32 dimensions, then ``prod(dims)`` bytes, row-major.
    Raises a one-line ``ValueError`` naming the file for a wrong magic number, a short
    or overlong data part, or a corrupt gzip stream.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable gzip file ({exc}); delete it and download it again.") from None
    if len(data) < 4:
        raise ValueError(f"{path}: only {len(data)} bytes, too short for an IDX header; the file is truncated.")
    (magic,) = struct.unpack(">I", data[:4])
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x}; "
            "this is not the right IDX file (images and labels swapped?)."
        )
    if magic >> 8 != 0x08:
        raise ValueError(f"{path}: bad magic number 0x{magic:08x}: only unsigned-byte IDX files (0x000008nn) are supported.")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header ({len(data)} bytes, {ndim} dimensions need {header}).")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: {len(data) - header} bytes of data but dimensions {dims} need {expected}; "
            "the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_idx_dataset(
    name: str,
    split: str = "train",
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ImageDataset:
    """MNIST or Fashion-MNIST, one split, from the four standard IDX ``.gz`` files.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    split : {"train", "test"}
        ``train-*`` (60,000 images) or ``t10k-*`` (10,000 images).
    root : path, optional
        A directory holding the ``.gz`` files (e.g. ``shared/data/mnist``); nothing is
        downloaded or checksummed then (only parsed).
    download : bool
        Without ``root``, files missing from the cache folder
        (:func:`default_cache_dir`: ``cache_dir`` / ``$TOPICVAE_DATA`` /
        ``~/.cache/topicvae``, then ``<name>``) are downloaded from the mirrors in
        ``IDX_DATASETS[name].mirrors`` (tried in order), written to a temporary file,
        checked against the canonical md5 and only then renamed into place.
    cache_dir : path, optional
        Base folder of the cache (see above).

    Returns
    -------
    ImageDataset
        ``images`` uint8 [N, 28, 28], ``labels`` int64 [N], ``label_names`` the 10 classes.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"name={name!r} is not an IDX data set; use one of {sorted(IDX_DATASETS)}.")
    if split not in IDX_FILES:
        raise ValueError(f"split={split!r} is not a split; use 'train' or 'test'.")
    source = IDX_DATASETS[name]
    image_file, label_file = IDX_FILES[split]
    if root is not None:
        folder = Path(root).expanduser()
        if not folder.is_dir():
            raise ValueError(f"root={str(root)!r} is not a directory; pass the folder that holds the {name} .gz files.")
        paths = []
        for file in (image_file, label_file):
            if not (folder / file).is_file():
                raise ValueError(f"{file} is missing from root={str(folder)!r}; put the {name} IDX .gz files there.")
            paths.append(folder / file)
    else:
        folder = default_cache_dir(name, cache_dir)
        paths = [_cached_file(source, name, file, folder, download) for file in (image_file, label_file)]

    images = read_idx(paths[0], IDX_IMAGES_MAGIC)
    labels = read_idx(paths[1], IDX_LABELS_MAGIC)
    if images.shape[1:] != IDX_IMAGE_SHAPE:
        raise ValueError(f"{paths[0]}: images are {images.shape[1]}x{images.shape[2]}, {name} images are 28x28.")
    if len(images) != len(labels):
        raise ValueError(
            f"{paths[1]}: {len(labels)} labels but {paths[0].name} has {len(images)} images; "
            "the files do not belong together."
        )
    if labels.size and labels.max() >= len(source.label_names):
        raise ValueError(f"{paths[1]}: label {int(labels.max())} out of range 0..{len(source.label_names) - 1}.")
    # np.frombuffer views are read-only; a copy gives callers an ordinary array.
    return ImageDataset(images.copy(), labels.astype(np.int64), list(source.label_names), name, split)


def _cached_file(source: IdxSource, name: str, file: str, folder: Path, download: bool) -> Path:
    """The path of ``file`` in the cache, downloading it first when missing (and allowed)."""
    path = folder / file
    if path.is_file():
        return path
    if not download:
        raise ValueError(
            f"{file} is missing from {folder} and download=False; pass root= a folder holding "
            f"the {name} .gz files, or allow download=True."
        )
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    md5_failed = False
    for mirror in source.mirrors:
        url = mirror.rstrip("/") + "/" + file
        try:
            _download(url, path, source.md5[file])
            return path
        except _Md5Mismatch as exc:
            md5_failed = True
            failures.append(f"{url}: {exc}")
        except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
            failures.append(f"{url}: {exc}")
    message = (
        f"could not download {file} for {name} ({'; '.join(failures)}); "
        f"pass root= a folder holding the files, or put them in {folder}."
    )
    # A checksum failure means wrong content (a ValueError); otherwise it was the network.
    raise (ValueError(message) if md5_failed else OSError(message))


class _Md5Mismatch(Exception):
    pass


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch ``url`` into a temporary file beside ``dest``; rename it to ``dest`` only if its md5 is ``md5``.

    The temporary file lives in the same folder, so the rename is atomic: readers see
    either no file or the complete, verified one; it is removed on any failure.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(_CHUNK_BYTES):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise _Md5Mismatch(f"md5 {digest.hexdigest()} != expected {md5}, file refused")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
