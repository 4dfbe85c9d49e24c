"""Image data sets: IDX parsing and caching (MNIST, Fashion-MNIST) and the dSprites renderer."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from topicvae.images import dsprites
from topicvae.images.data import IDX_DATASETS, IdxSource, ImageDataset, default_cache_dir, load_idx_dataset, read_idx
from topicvae.images.dsprites import DSPRITES_FACTOR_NAMES, DSPRITES_FACTOR_SIZES, DSPRITES_FACTORS, DSPRITES_NPZ_NAME, DSprites, load_dsprites, render_dsprites

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
ALL_FILES = TRAIN_FILES + ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def needs_shared(folder: str):
    path = SHARED / folder
    return pytest.mark.skipif(not path.is_dir(), reason=f"needs the shared data copy in {path}")


# ---------------------------------------------------------------------------
# IDX files written here
# ---------------------------------------------------------------------------


def idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload


def write_gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data))
    return path


def tiny_split(folder: Path, n_images: int = 5, n_labels: int = 5, side: int = 28, magic_images: int = 0x803):
    """A tiny train split (images with values 0..255, labels 0..9) in ``folder``; returns both arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_images, side, side), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n_labels, dtype=np.uint8)
    write_gz(folder / TRAIN_FILES[0], idx_bytes(magic_images, images.shape, images.tobytes()))
    write_gz(folder / TRAIN_FILES[1], idx_bytes(0x801, labels.shape, labels.tobytes()))
    return images, labels


def test_idx_parsing_from_root(tmp_path):
    images, labels = tiny_split(tmp_path)
    data = load_idx_dataset("mnist", "train", root=tmp_path)
    assert isinstance(data, ImageDataset) and len(data) == 5
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.images.dtype == np.uint8 and data.labels.dtype == np.int64
    assert data.label_names == [str(d) for d in range(10)] and data.name == "mnist"
    fashion = load_idx_dataset("fashion-mnist", "train", root=tmp_path)
    assert fashion.label_names[0] == "T-shirt/top" and fashion.label_names[9] == "Ankle boot"


def test_idx_bad_magic(tmp_path):
    tiny_split(tmp_path, magic_images=0x801 + 0x100000)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: bad magic number 0x00100801"):
        load_idx_dataset("mnist", root=tmp_path)
    # Images and labels swapped: both are valid IDX files, the magic number tells them apart.
    tiny_split(tmp_path)
    (tmp_path / "swap").mkdir()
    (tmp_path / "swap" / TRAIN_FILES[0]).write_bytes((tmp_path / TRAIN_FILES[1]).read_bytes())
    (tmp_path / "swap" / TRAIN_FILES[1]).write_bytes((tmp_path / TRAIN_FILES[0]).read_bytes())
    with pytest.raises(ValueError, match=r"bad magic number 0x00000801, expected 0x00000803"):
        load_idx_dataset("mnist", root=tmp_path / "swap")


def test_idx_truncated_data_and_header(tmp_path):
    write_gz(tmp_path / "short.gz", idx_bytes(0x803, (2, 28, 28), bytes(2 * 784 - 10)))
    with pytest.raises(ValueError, match=r"short.gz: 1558 bytes of data but dimensions \(2, 28, 28\) need 1568"):
        read_idx(tmp_path / "short.gz", 0x803)
    write_gz(tmp_path / "long.gz", idx_bytes(0x801, (3,), bytes(4)))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(tmp_path / "long.gz", 0x801)
    write_gz(tmp_path / "header.gz", struct.pack(">I", 0x803) + bytes(5))
    with pytest.raises(ValueError, match="truncated header"):
        read_idx(tmp_path / "header.gz")
    (tmp_path / "broken.gz").write_bytes(gzip.compress(bytes(100))[:-12])
    with pytest.raises(ValueError, match="broken.gz: not a readable gzip file"):
        read_idx(tmp_path / "broken.gz")


def test_idx_count_mismatch_and_wrong_size(tmp_path):
    tiny_split(tmp_path / "a", n_images=5, n_labels=4)
    with pytest.raises(ValueError, match=r"4 labels but train-images-idx3-ubyte.gz has 5 images"):
        load_idx_dataset("mnist", root=tmp_path / "a")
    tiny_split(tmp_path / "b", side=27)
    with pytest.raises(ValueError, match=r"images are 27x27, mnist images are 28x28"):
        load_idx_dataset("mnist", root=tmp_path / "b")


def test_idx_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"name='kmnist' is not an IDX data set"):
        load_idx_dataset("kmnist", root=tmp_path)
    with pytest.raises(ValueError, match=r"split='valid' is not a split"):
        load_idx_dataset("mnist", "valid", root=tmp_path)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is missing from root="):
        load_idx_dataset("mnist", root=tmp_path)


# ---------------------------------------------------------------------------
# Download and cache (file:// mirrors, no network)
# ---------------------------------------------------------------------------


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def local_mirror(tmp_path, monkeypatch):
    """Serve a tiny MNIST train split from a file:// "mirror"; returns (server folder, images, labels)."""
    server = tmp_path / "server"
    images, labels = tiny_split(server)
    md5 = {file: md5_of(server / file) for file in TRAIN_FILES}
    md5.update({file: "0" * 32 for file in ALL_FILES[2:]})
    source = IdxSource(
        mirrors=((tmp_path / "nowhere").as_uri() + "/", server.as_uri() + "/"),  # the first one fails
        md5=md5,
        label_names=IDX_DATASETS["mnist"].label_names,
    )
    monkeypatch.setitem(IDX_DATASETS, "mnist", source)
    return server, images, labels


def test_download_into_cache_then_reuse(tmp_path, local_mirror):
    server, images, labels = local_mirror
    data = load_idx_dataset("mnist", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    folder = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(TRAIN_FILES)  # no leftover temporary files
    # Second call: served from the cache, even with the mirror gone and download=False.
    for file in TRAIN_FILES:
        (server / file).unlink()
    again = load_idx_dataset("mnist", cache_dir=tmp_path / "cache", download=False)
    np.testing.assert_array_equal(again.images, images)


def test_download_md5_mismatch_is_refused(tmp_path, local_mirror, monkeypatch):
    source = IDX_DATASETS["mnist"]
    bad = dict(source.md5, **{TRAIN_FILES[0]: "f" * 32})
    monkeypatch.setitem(IDX_DATASETS, "mnist", IdxSource(source.mirrors, bad, source.label_names))
    with pytest.raises(ValueError, match=r"could not download train-images-idx3-ubyte.gz for mnist.*md5 .* != expected f{32}, file refused"):
        load_idx_dataset("mnist", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_download_network_failure_is_an_oserror(tmp_path, monkeypatch):
    source = IdxSource(((tmp_path / "nowhere").as_uri() + "/",), dict.fromkeys(ALL_FILES, "0" * 32), ("a",) * 10)
    monkeypatch.setitem(IDX_DATASETS, "mnist", source)
    with pytest.raises(OSError, match="could not download train-images-idx3-ubyte.gz"):
        load_idx_dataset("mnist", cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "mnist").iterdir()) == []


def test_missing_file_without_download(tmp_path):
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz is missing from .* and download=False; pass root="):
        load_idx_dataset("fashion-mnist", cache_dir=tmp_path, download=False)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("TOPICVAE_DATA", raising=False)
    assert default_cache_dir("mnist") == Path.home() / ".cache" / "topicvae" / "mnist"
    monkeypatch.setenv("TOPICVAE_DATA", str(tmp_path / "env"))
    assert default_cache_dir("mnist") == tmp_path / "env" / "mnist"
    assert default_cache_dir("mnist", tmp_path / "arg") == tmp_path / "arg" / "mnist"


def test_as_float_and_binarize():
    images = np.array([[[0, 127, 128, 255]]], dtype=np.uint8)
    data = ImageDataset(images, np.array([3]), [str(d) for d in range(10)], "tiny")
    x = data.as_float()
    assert x.dtype == np.float32 and x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(data.binarize(), [[[0, 0, 1, 1]]])
    big = ImageDataset(np.full((200, 10, 10), 64, np.uint8), np.zeros(200, np.int64), ["a"], "grey")
    draw = big.binarize(np.random.default_rng(0))
    assert set(np.unique(draw)) == {0.0, 1.0}
    assert abs(draw.mean() - 64 / 255) < 0.01
    np.testing.assert_array_equal(draw, big.binarize(np.random.default_rng(0)))  # reproducible
    with pytest.raises(ValueError, match="rng must be a numpy Generator"):
        big.binarize(0)
    with pytest.raises(ValueError, match=r"labels must be an array of shape \(1,\)"):
        ImageDataset(images, np.array([1, 2]), ["a"], "bad")


# ---------------------------------------------------------------------------
# Real MNIST / Fashion-MNIST (../shared/data)
# ---------------------------------------------------------------------------


@pytest.mark.shared_data
@needs_shared("mnist")
def test_shared_mnist():
    train = load_idx_dataset("mnist", "train", root=SHARED / "mnist")
    assert train.images.shape == (60000, 28, 28)
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(train.labels, minlength=10).tolist() == counts
    test = load_idx_dataset("mnist", "test", root=SHARED / "mnist")
    assert test.images.shape == (10000, 28, 28) and len(test.labels) == 10000
    for file in ALL_FILES:
        assert md5_of(SHARED / "mnist" / file) == IDX_DATASETS["mnist"].md5[file], file


@pytest.mark.shared_data
@needs_shared("fashion-mnist")
def test_shared_fashion_mnist():
    for split, n in (("train", 60000), ("test", 10000)):
        data = load_idx_dataset("fashion-mnist", split, root=SHARED / "fashion-mnist")
        assert data.images.shape == (n, 28, 28)
        assert np.bincount(data.labels, minlength=10).tolist() == [n // 10] * 10
    for file in ALL_FILES:
        assert md5_of(SHARED / "fashion-mnist" / file) == IDX_DATASETS["fashion-mnist"].md5[file], file


# ---------------------------------------------------------------------------
# dSprites: factors and indexing
# ---------------------------------------------------------------------------


def test_dsprites_factors():
    assert DSPRITES_FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert DSPRITES_FACTOR_SIZES == (3, 6, 40, 32, 32)
    np.testing.assert_allclose(DSPRITES_FACTORS["scale"], [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert DSPRITES_FACTORS["orientation"][0] == 0 and DSPRITES_FACTORS["orientation"][-1] == 2 * np.pi
    assert DSPRITES_FACTORS["pos_x"][1] == pytest.approx(1 / 31)
    with pytest.raises(ValueError):  # read-only
        DSPRITES_FACTORS["scale"][0] = 2.0


def test_dsprites_index_round_trip_and_strides():
    ds = DSprites.procedural()
    assert len(ds) == 737280 and ds.source == "procedural"
    assert ds.factor_names == ["shape", "scale", "orientation", "pos_x", "pos_y"]
    assert ds.factor_sizes == [3, 6, 40, 32, 32]
    assert ds.strides.tolist() == [245760, 40960, 1024, 32, 1]  # README section 5, colour dropped
    assert ds.index_of(np.array([[0, 0, 0, 0, 1], [0, 0, 0, 1, 0], [2, 5, 39, 31, 31]])).tolist() == [1, 32, 737279]
    idx = np.random.default_rng(0).integers(0, len(ds), 5000)
    classes = ds.factors_of(idx)
    assert classes.dtype == np.int64 and classes.shape == (5000, 5)
    np.testing.assert_array_equal(ds.index_of(classes), idx)
    factors = ds.sample_factors(4000, np.random.default_rng(1))
    assert factors.shape == (4000, 5) and (factors.max(0) == np.array(ds.factor_sizes) - 1).all()
    np.testing.assert_array_equal(ds.factors_of(ds.index_of(factors)), factors)
    with pytest.raises(ValueError, match=r"factor_classes\[0, 3\] = 32 is out of range for factor 'pos_x'"):
        ds.index_of(np.array([[0, 0, 0, 32, 0]]))
    with pytest.raises(ValueError, match="indices holds 737280"):
        ds.factors_of(np.array([0, 737280]))
    with pytest.raises(ValueError, match=r"integer array \[n, 5\]"):
        render_dsprites(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="integer class indices"):
        render_dsprites(np.zeros((2, 5)))


# ---------------------------------------------------------------------------
# dSprites: renderer geometry (README section 5)
# ---------------------------------------------------------------------------


def upright(shape: int, pos_x: int = 0, pos_y: int = 0) -> np.ndarray:
    return render_dsprites(np.array([[shape, s, 0, pos_x, pos_y] for s in range(6)]))


def centroid(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(image)
    return np.array([xs.mean(), ys.mean()])


def test_rendered_areas_and_boxes_at_orientation_0():
    square, ellipse, heart = upright(0), upright(1), upright(2)
    for images in (square, ellipse, heart):
        assert images.dtype == np.uint8 and set(np.unique(images)) == {0, 1}
    assert square.sum((1, 2)).tolist() == [100, 144, 196, 256, 324, 400]
    np.testing.assert_allclose(ellipse.sum((1, 2)), [76, 104, 144, 184, 228, 288], rtol=0.03)
    np.testing.assert_allclose(heart.sum((1, 2)), [58, 84, 108, 140, 182, 222], rtol=0.03)
    # Bounding boxes at pos (0, 0), scale 1: square rows/cols 6..25; ellipse 26 x 14
    # centred on 16; heart 20 wide (cols 6..25) and 17 tall (rows 7..23).
    for image, rows, cols in ((square[5], (6, 25), (6, 25)), (ellipse[5], (9, 22), (3, 28)), (heart[5], (7, 23), (6, 25))):
        ys, xs = np.nonzero(image)
        assert (ys.min(), ys.max()) == rows and (xs.min(), xs.max()) == cols
    # The heart is upright: lobes (most of the area) above the centre, the point below.
    assert centroid(heart[5])[1] < 15.5 and heart[5][23, 15:17].all() and not heart[5][23, [14, 17]].any()


def test_orientation_0_and_39_identical_and_rotation_direction():
    classes = np.array([[s, k, o, x, y] for s in range(3) for k in (0, 3, 5) for (x, y) in ((0, 0), (7, 19)) for o in (0, 39)])
    images = render_dsprites(classes)
    np.testing.assert_array_equal(images[0::2], images[1::2])
    # Counter-clockwise as displayed: at orientation 10 (about 92 degrees) the heart's
    # point is on the right and its lobes on the left; at 30 the other way round.
    hearts = render_dsprites(np.array([[2, 5, 10, 15, 15], [2, 5, 30, 15, 15]]))
    centre = 16 + 32 * 15 / 31 - 0.5  # in array-index coordinates
    assert centroid(hearts[0])[0] < centre - 0.5 < centre + 0.5 < centroid(hearts[1])[0]


def test_square_centroid_is_fixed_under_rotation():
    # pos (0, 31): centre (16, 48), on pixel corners, so the upright raster is symmetric too.
    images = render_dsprites(np.array([[0, 5, o, 0, 31] for o in range(40)]))
    areas = images.sum((1, 2))
    assert areas.min() >= 360 and areas.max() <= 400  # README: 364..372 when rotated
    offsets = np.array([centroid(im) for im in images]) - (np.array([16, 48]) - 0.5)  # index coordinates
    assert np.abs(offsets).max() < 0.06, offsets
    # Off the pixel grid the raster can only follow the centre to within half a pixel.
    pos_x, pos_y = 9, 22
    images = render_dsprites(np.array([[0, 5, o, pos_x, pos_y] for o in range(40)]))
    centre = np.array([16 + 32 * pos_x / 31, 16 + 32 * pos_y / 31]) - 0.5
    assert np.abs(np.array([centroid(im) for im in images]) - centre).max() < 0.5


@pytest.mark.parametrize("shape", [0, 1, 2])
def test_positions_move_the_centroid_by_32_over_31_px(shape):
    steps = np.arange(32)
    along_x = render_dsprites(np.array([[shape, 5, 0, p, 4] for p in steps]))
    along_y = render_dsprites(np.array([[shape, 5, 0, 4, p] for p in steps]))
    cx = np.array([centroid(im) for im in along_x])
    cy = np.array([centroid(im) for im in along_y])
    # Each step moves the centre 32/31 px; the raster follows it to within half a pixel.
    expected = 32 * steps / 31
    assert np.abs(cx[:, 0] - cx[0, 0] - expected).max() <= 0.5
    assert np.abs(cy[:, 1] - cy[0, 1] - expected).max() <= 0.5
    assert np.polyfit(steps, cx[:, 0], 1)[0] == pytest.approx(32 / 31, abs=0.02)
    assert np.polyfit(steps, cy[:, 1], 1)[0] == pytest.approx(32 / 31, abs=0.02)
    assert np.ptp(cx[:, 1]) < 0.25 and np.ptp(cy[:, 0]) < 0.25  # the other axis stays (raster jitter only)
    # pos 0 and pos 31 are exactly 32 px apart: the same raster shifted.
    np.testing.assert_array_equal(along_x[0][:, :32], along_x[31][:, 32:])
    np.testing.assert_array_equal(along_y[0][:32], along_y[31][32:])


@pytest.mark.shared_data
@needs_shared("dsprites")
def test_agreement_with_reference_frames():
    """Measured (module docstring): mean IoU 0.99966 / 0.99914 / 0.99884, min 0.989, 278 identical frames."""
    reference = np.load(SHARED / "dsprites" / "dsprites_gif_frames.npz")
    frames = reference["imgs"].astype(bool)
    latents = reference["latents_classes_inferred"]
    assert frames.shape == (320, 64, 64) and (latents[:, 0] == 0).all()
    rendered = render_dsprites(latents[:, 1:]).astype(bool)
    iou = (rendered & frames).sum((1, 2)) / (rendered | frames).sum((1, 2))
    accuracy = (rendered == frames).mean((1, 2))
    for shape in range(3):
        mask = latents[:, 1] == shape
        assert iou[mask].mean() > 0.998, (shape, iou[mask].mean())
        assert iou[mask].min() > 0.985, (shape, iou[mask].min())
        assert accuracy[mask].mean() > 0.9999, (shape, accuracy[mask].mean())
    assert (rendered == frames).all((1, 2)).sum() >= 260


# ---------------------------------------------------------------------------
# dSprites: the data set object
# ---------------------------------------------------------------------------


def test_sample_honours_exclude():
    ds = DSprites.procedural()
    rng = np.random.default_rng(0)
    right_hearts = lambda f: (f[:, 0] == 2) & (f[:, 3] >= 16)  # noqa: E731
    images, classes = ds.sample(300, rng, exclude=right_hearts)
    assert images.shape == (300, 64, 64) and classes.shape == (300, 5)
    assert not right_hearts(classes).any()
    assert (classes[:, 0] == 2).any() and (classes[:, 3] >= 16).any()  # only the combination is left out
    np.testing.assert_array_equal(images, render_dsprites(classes))
    images, classes = ds.sample(50, rng)
    assert images.shape == (50, 64, 64)
    with pytest.raises(ValueError, match="exclude leaves out every factor combination"):
        ds.sample(5, rng, exclude=lambda f: np.ones(len(f), bool))
    with pytest.raises(ValueError, match="boolean mask"):
        ds.sample(5, rng, exclude=lambda f: f[:, 0])
    with pytest.raises(ValueError, match="n=-1 must be a non-negative integer"):
        ds.sample(-1, rng)


def write_fake_npz(path: Path, sizes=(1, 3, 2, 2, 2, 2), shuffle: bool = False, n_imgs: int | None = None):
    classes = np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int64)  # row-major, last fastest
    if shuffle:
        classes = classes[::-1]
    imgs = np.random.default_rng(0).integers(0, 2, size=(n_imgs or len(classes), 64, 64), dtype=np.uint8)
    metadata = np.array({"latents_sizes": sizes}, dtype=object)  # pickled, like the official file
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(float), metadata=metadata)
    return imgs


def test_from_npz_on_a_tiny_fake(tmp_path):
    path = tmp_path / "fake.npz"
    imgs = write_fake_npz(path)
    ds = DSprites.from_npz(path)
    assert ds.source == "npz" and ds.path == path
    assert ds.factor_sizes == [3, 2, 2, 2, 2] and len(ds) == 48 and ds.strides.tolist() == [16, 8, 4, 2, 1]
    classes = np.array([[0, 0, 0, 0, 0], [2, 1, 1, 1, 1], [1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(ds.images(classes), imgs[[0, 47, 16 + 4 + 1]])
    images, sampled = ds.sample(20, np.random.default_rng(0))
    np.testing.assert_array_equal(images, imgs[ds.index_of(sampled)])
    with pytest.raises(ValueError, match="out of range"):
        ds.images(np.array([[0, 2, 0, 0, 0]]))

    write_fake_npz(tmp_path / "shuffled.npz", shuffle=True)
    with pytest.raises(ValueError, match="not the complete row-major grid"):
        DSprites.from_npz(tmp_path / "shuffled.npz")
    write_fake_npz(tmp_path / "short.npz", n_imgs=47)
    with pytest.raises(ValueError, match=r"imgs has shape \(47, 64, 64\), expected \(48, 64, 64\)"):
        DSprites.from_npz(tmp_path / "short.npz")
    with pytest.raises(ValueError, match="does not exist"):
        DSprites.from_npz(tmp_path / "absent.npz")


def test_load_dsprites_sources(tmp_path):
    assert load_dsprites(cache_dir=tmp_path).source == "procedural"
    cached = tmp_path / "dsprites" / DSPRITES_NPZ_NAME
    cached.parent.mkdir()
    write_fake_npz(cached)
    found = load_dsprites(cache_dir=tmp_path)
    assert found.source == "npz" and found.path == cached
    assert load_dsprites(cached).source == "npz"
    procedural = DSprites.procedural()
    classes = procedural.sample_factors(10, np.random.default_rng(3))
    np.testing.assert_array_equal(procedural.images(classes), render_dsprites(classes))


def test_window_covers_every_sprite():
    # The renderer draws in a window around the centre; a sprite reaching past it would be clipped.
    assert dsprites._MAX_SPRITE_RADIUS < dsprites._WINDOW_REACH
    biggest = render_dsprites(np.array([[s, 5, o, 31, 31] for s in range(3) for o in range(0, 40, 3)]))
    assert not biggest[:, :, :30].any() and not biggest[:, :30, :].any()
