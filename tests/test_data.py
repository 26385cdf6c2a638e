"""Tests for pssl.datasets: containers, file readers, synthetic generators and the registry."""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import pssl.datasets.core as core
import pssl.datasets.mnist as mnist_module
from pssl.datasets import (
    DATASETS,
    PALETTE,
    DataNotFoundError,
    DataSplits,
    TensorData,
    dataset_names,
    load_dataset,
    read_idx,
    seeded_generator,
    split_modalities,
    validate_images,
    write_idx,
)
from pssl.datasets.celeba import CACHE_FOLDER, HAIR_COLOURS
from pssl.datasets.shapes import SHAPE_COLORS, draw_shapes, sample_shape_params
from pssl.datasets.styled import palette_tensor, render_styled, sample_style_params

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@pytest.fixture(autouse=True)
def _no_env_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Searches must not depend on the developer's PSSL_DATA."""
    monkeypatch.delenv("PSSL_DATA", raising=False)


# --------------------------------------------------------------------------- fake files


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An IDX file built by hand (independently of write_idx)."""
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_fake_idx_set(folder: Path, *, num_train: int = 30, num_test: int = 12, gz: bool = True) -> dict:
    """Four tiny MNIST-like IDX files whose pixels encode the item index."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (num_train, 6, 6), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(num_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (num_test, 6, 6), dtype=np.uint8),
        IDX_NAMES[3]: ((np.arange(num_test) + 3) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array, 0x08)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def write_fake_cifar(folder: Path, *, per_batch: int = 4, bytes_keys: bool = False) -> None:
    """torchvision-layout CIFAR-10 batches whose pixel (n, c, y, x) is (n + 7c + 3y + x) mod 256."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        n = np.arange(per_batch)[:, None, None, None] + 100 * b
        c = np.arange(3)[None, :, None, None]
        y = np.arange(32)[None, None, :, None]
        x = np.arange(32)[None, None, None, :]
        images = ((n + 7 * c + 3 * y + x) % 256).astype(np.uint8)
        batch = {"data": images.reshape(per_batch, 3072), "labels": [(i + b) % 10 for i in range(per_batch)]}
        if bytes_keys:
            batch = {k.encode(): v for k, v in batch.items()}
        (batches / name).write_bytes(pickle.dumps(batch, protocol=2))


CELEBA_FILES = {  # file -> (partition, hair attributes set, RGB colour)
    "000001.jpg": (0, ["Black_Hair"], (200, 30, 30)),
    "000002.jpg": (0, ["Blond_Hair", "Brown_Hair"], (30, 200, 30)),
    "000003.jpg": (1, [], (30, 30, 200)),
    "000004.jpg": (2, ["Gray_Hair", "Smiling"], (220, 220, 40)),
}


def write_fake_celeba(root: Path) -> Path:
    """A torchvision-layout CelebA folder with four solid-colour 20x24 JPEGs."""
    from PIL import Image

    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    names = list(HAIR_COLOURS) + ["Smiling"] + [f"Attr_{i}" for i in range(35)]
    lines = [str(len(CELEBA_FILES)), "  ".join(names)]
    partition = []
    for file, (part, on, rgb) in CELEBA_FILES.items():
        Image.new("RGB", (20, 24), rgb).save(folder / "img_align_celeba" / file, quality=95)
        lines.append(file + " " + " ".join("1" if n in on else "-1" for n in names))
        partition.append(f"{file} {part}")
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")
    return folder


@pytest.fixture(scope="module")
def fake_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny stand-ins for every file-backed data set."""
    base = tmp_path_factory.mktemp("fake_data")
    write_fake_idx_set(base / "mnist")
    write_fake_idx_set(base / "fashion" / "FashionMNIST" / "raw", gz=False)
    write_fake_cifar(base / "cifar")
    write_fake_celeba(base / "celeba_root")
    return {
        "mnist": base / "mnist",
        "fashionmnist": base / "fashion",
        "cifar10": base / "cifar",
        "celeba": base / "celeba_root",
    }


# --------------------------------------------------------------------------- IDX format


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_hand_built_files(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    shorts = np.array([-3, 1000, 7], dtype=np.int16)
    for name, array, code in [("a", images, 0x08), ("b", floats, 0x0D), ("c", shorts, 0x0B)]:
        data = idx_bytes(array, code)
        path = tmp_path / (name + (".gz" if gz else ""))
        path.write_bytes(gzip.compress(data) if gz else data)
        read = read_idx(path)
        assert read.shape == array.shape
        np.testing.assert_array_equal(read.numpy(), array)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_write_read_idx_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"x{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    np.testing.assert_array_equal(read_idx(path).numpy(), array)


def test_write_idx_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="int64"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"ab", "bad magic"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"abc", "size mismatch"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + b"abcd", "size mismatch"),
        (b"\x00\x00\x42\x01" + struct.pack(">I", 2) + b"ab", "unknown IDX type"),
        (b"\x00\x00\x08\x03\x00", "truncated IDX header"),
        (gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 400) + bytes(400))[:-30], "corrupt gzip"),
    ],
)
def test_corrupt_idx_names_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "broken-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_mnist_loader_reads_tiny_idx_files_gz_and_raw(tmp_path: Path) -> None:
    for gz in (True, False):
        folder = tmp_path / f"gz{gz}"
        arrays = write_fake_idx_set(folder, gz=gz)
        splits = load_dataset("mnist", {"root": str(folder), "val_fraction": 0.0})
        np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), arrays[IDX_NAMES[0]])
        np.testing.assert_array_equal(splits.train.labels.numpy(), arrays[IDX_NAMES[1]])
        np.testing.assert_array_equal(splits.test.images[:, 0].numpy(), arrays[IDX_NAMES[2]])
        np.testing.assert_array_equal(splits.test.labels.numpy(), arrays[IDX_NAMES[3]])
        assert splits.train.labels.dtype == torch.int64 and splits.train.num_classes == 10


@pytest.mark.parametrize("layout", ["MNIST/raw", "raw"])
def test_mnist_loader_finds_torchvision_layout(tmp_path: Path, layout: str) -> None:
    write_fake_idx_set(tmp_path / layout)
    splits = load_dataset("mnist", {"root": str(tmp_path), "val_fraction": 0.1})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 3, 12)


def test_fashionmnist_finds_torchvision_layout_and_env_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    write_fake_idx_set(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert len(load_dataset("fashionmnist", {"root": str(tmp_path / "tv")}).test) == 12
    write_fake_idx_set(tmp_path / "env" / "fashion-mnist", num_test=5)
    monkeypatch.setenv("PSSL_DATA", str(tmp_path / "env"))
    assert len(load_dataset("fashionmnist").test) == 5


def test_mismatched_image_and_label_counts_name_both_files(tmp_path: Path) -> None:
    write_fake_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8), 8)))
    with pytest.raises(ValueError, match="12 images") as info:
        load_dataset("mnist", {"root": str(tmp_path)})
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value) and "t10k-images" in str(info.value)


def test_missing_mnist_error_names_dataset_paths_and_remedies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSSL_DATA", str(tmp_path / "env"))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", {"root": str(tmp_path / "nowhere")})
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "'mnist'" in message and info.value.dataset == "mnist"
    for path in [tmp_path / "nowhere", tmp_path / "nowhere" / "MNIST" / "raw", tmp_path / "env"]:
        assert str(path) in message
        assert path in info.value.tried
    assert "data.root=" in message and "data.download=true" in message


def test_missing_fashionmnist_error_suggests_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", tmp_path / "absent")
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashionmnist", {"root": str(tmp_path)})
    assert "apt-get install dataset-fashion-mnist" in str(info.value)
    assert str(tmp_path / "absent") in str(info.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(info.value)


def test_download_option_calls_torchvision_into_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(class_name: str, target: Path, **kwargs: object) -> None:
        calls.append((class_name, target, kwargs))
        write_fake_idx_set(target / class_name / "raw")

    monkeypatch.setattr(core, "torchvision_download", fake_download)
    splits = load_dataset("mnist", {"root": str(tmp_path), "download": "true"})
    assert calls == [("MNIST", tmp_path, {"train": True})] and len(splits.test) == 12

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(core, "torchvision_download", offline)
    for name in ("mnist", "cifar10", "celeba"):
        with pytest.raises(DataNotFoundError, match="network unreachable"):
            load_dataset(name, {"root": str(tmp_path / "empty"), "download": True})
    with pytest.raises(ValueError, match="needs data.root"):
        load_dataset("cifar10", {"download": True})


def test_real_mnist_with_limit(mnist_root: Path) -> None:
    splits = load_dataset("mnist", {"root": str(mnist_root), "limit": 200, "val_fraction": 0.0})
    assert splits.image_shape == (1, 28, 28) and len(splits.train) == len(splits.test) == 200
    # Well-known first labels of the official MNIST files.
    assert splits.train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert splits.test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert splits.train.images.max() == 255 and splits.train.images[:, :, 0, :].max() == 0


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashionmnist_auto_detects_debian_package() -> None:
    splits = load_dataset("fashionmnist", {"limit": 100}, seed=3)
    assert splits.image_shape == (1, 28, 28)
    assert len(splits.train) + len(splits.val) == 100 and len(splits.test) == 100
    assert splits.test.labels[:3].tolist() == [9, 2, 1]  # ankle boot, pullover, trouser


# --------------------------------------------------------------------------- digits and splitting


def _item_keys(data: TensorData) -> list[tuple[bytes, int]]:
    return [(img.numpy().tobytes(), int(lab)) for img, lab in zip(data.images, data.labels)]


def test_digits_splits_partition_the_data() -> None:
    from sklearn.datasets import load_digits

    splits = load_dataset("digits")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1293, 144, 360)
    assert splits.image_shape == (1, 8, 8) and splits.train.images.dtype == torch.uint8
    bunch = load_digits()
    original = sorted(
        (np.round(im * 255 / 16).astype(np.uint8)[None].tobytes(), int(t))
        for im, t in zip(bunch.images, bunch.target)
    )
    combined = sorted(_item_keys(splits.train) + _item_keys(splits.val) + _item_keys(splits.test))
    assert combined == original  # every item exactly once across the splits


def test_digits_validation_follows_seed_and_test_follows_data_seed() -> None:
    a, b, c = load_dataset("digits", seed=0), load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the run seed never changes the test items
    d = load_dataset("digits", {"data_seed": 1}, seed=0)
    assert not torch.equal(a.test.images, d.test.images)


def test_limit_and_split_option_errors() -> None:
    splits = load_dataset("digits", {"limit": "50", "val_fraction": "0.2"})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 50)
    for options, match in [
        ({"limit": 0}, "limit"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"test_fraction": 0.0}, "test_fraction"),
        ({"limit": 1, "val_fraction": 0.5}, "no training items"),
    ]:
        with pytest.raises(ValueError, match=match):
            load_dataset("digits", options)


def test_registry_lists_every_data_set_and_rejects_unknown_names() -> None:
    expected = {"digits", "mnist", "fashionmnist", "cifar10", "celeba", "shapes"}
    expected |= {f"{p}-{b}" for p in ("styled", "paired") for b in ("digits", "mnist", "fashionmnist")}
    assert expected <= set(dataset_names())
    with pytest.raises(ValueError, match="accepted: .*digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="no option 'canvas'"):
        load_dataset("digits", {"canvas": 3})
    assert "canvas=40" in DATASETS.entry("styled-mnist").signature_line()
    assert "download=False" in DATASETS.entry("styled-mnist").signature_line()


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_reads_fake_batches(tmp_path: Path, bytes_keys: bool) -> None:
    write_fake_cifar(tmp_path, bytes_keys=bytes_keys)
    splits = load_dataset("cifar10", {"root": str(tmp_path), "val_fraction": 0.0})
    assert (len(splits.train), len(splits.test)) == (20, 4) and splits.image_shape == (3, 32, 32)
    n, c, y, x = 6, 2, 5, 9  # item 2 of data_batch_2
    assert int(splits.train.images[n, c, y, x]) == (2 + 100 + 7 * c + 3 * y + x) % 256
    assert splits.train.labels[:5].tolist() == [0, 1, 2, 3, 1]
    assert int(splits.test.images[1, 0, 0, 1]) == (1 + 500 + 1) % 256


def test_cifar10_limit_and_missing(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path)
    splits = load_dataset("cifar10", {"root": str(tmp_path / "cifar-10-batches-py"), "limit": 6})
    assert len(splits.train) + len(splits.val) == 6 and len(splits.test) == 4
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", {"root": str(tmp_path / "missing")})


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path)

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("this must never run",))

    target = tmp_path / "cifar-10-batches-py" / "test_batch"
    target.write_bytes(pickle.dumps({"data": Evil(), "labels": []}))
    with pytest.raises(ValueError, match="test_batch") as info:
        load_dataset("cifar10", {"root": str(tmp_path)})
    assert "refusing" in str(info.value)


# --------------------------------------------------------------------------- CelebA


def test_celeba_reads_fake_folder(tmp_path: Path) -> None:
    folder = write_fake_celeba(tmp_path)
    splits = load_dataset("celeba", {"root": str(tmp_path), "image_size": 8})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (2, 1, 1)
    assert splits.image_shape == (3, 8, 8) and splits.num_classes == 5
    # Hair rule: exactly one of black/blond/brown/gray -> that class, else "other" (4).
    assert splits.train.labels.tolist() == [0, 4]
    assert splits.val.labels.tolist() == [4] and splits.test.labels.tolist() == [3]
    assert len(splits.train.factors) == 40
    assert set(splits.train.factor_kinds.values()) == {"discrete"}
    assert splits.test.factors["Smiling"].tolist() == [1] and splits.train.factors["Smiling"].tolist() == [
        0,
        0,
    ]
    assert splits.train.factors["Black_Hair"].tolist() == [1, 0]
    for data, files in [(splits.train, ["000001.jpg", "000002.jpg"]), (splits.test, ["000004.jpg"])]:
        for image, file in zip(data.images, files):
            expected = torch.tensor(CELEBA_FILES[file][2], dtype=torch.float32)[:, None, None]
            assert (image.float() - expected).abs().max() <= 12  # JPEG is lossy
    # The decoded partitions were cached; they load without the JPEGs.
    assert (folder / CACHE_FOLDER).is_dir()
    for jpeg in (folder / "img_align_celeba").iterdir():
        jpeg.unlink()
    again = load_dataset("celeba", {"root": str(folder), "image_size": 8})
    assert torch.equal(again.train.images, splits.train.images)


def test_celeba_carved_validation_and_missing(tmp_path: Path) -> None:
    write_fake_celeba(tmp_path)
    splits = load_dataset(
        "celeba", {"root": str(tmp_path), "image_size": 4, "val_fraction": 0.5, "cache": False}
    )
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1, 1, 1)
    with pytest.raises(DataNotFoundError, match="list_attr_celeba.txt"):
        load_dataset("celeba", {"root": str(tmp_path / "nothing")})


# --------------------------------------------------------------------------- styled


def _alpha(images: torch.Tensor, fg: torch.Tensor, bg: torch.Tensor) -> torch.Tensor:
    """Recover alpha from composited pixels: projection of (x - bg) on (fg - bg)."""
    diff = (fg.float() - bg.float())[:, :, None, None]
    return ((images.float() - bg.float()[:, :, None, None]) * diff).sum(1) / diff.square().sum(1)


def _centroid(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intensity centroid (x, y) of (N, H, W) weights in pixel units, pixel centres at i + 1/2."""
    h, w = weights.shape[-2:]
    ys = torch.arange(h, dtype=torch.float64) + 0.5
    xs = torch.arange(w, dtype=torch.float64) + 0.5
    mass = weights.double().sum((-2, -1))
    return (weights.double().sum(-2) * xs).sum(-1) / mass, (weights.double().sum(-1) * ys).sum(-1) / mass


def check_styled_factors(
    images: torch.Tensor, base: torch.Tensor, factors: dict, canvas: int, min_peak_alpha: float
) -> None:
    """Assert the recorded style factors are the ones visible in the pixels."""
    colors = palette_tensor()
    fg, bg = colors[factors["fg_color"]], colors[factors["bg_color"]]
    assert torch.all(factors["fg_color"] != factors["bg_color"])
    for corner in [(0, 0), (0, -1), (-1, 0), (-1, -1)]:
        assert torch.equal(images[:, :, corner[0], corner[1]], bg)  # background = palette[bg_color]
    alpha = _alpha(images, fg, bg)
    # Foreground = palette[fg_color]: the most covered pixel is (nearly) fg, and every
    # pixel lies on the segment from bg to fg (antialiased edges blend the two).
    peak, brightest = alpha.flatten(1).max(1)
    assert peak.min() >= min_peak_alpha
    found = images.flatten(2)[torch.arange(len(images)), :, brightest].float()
    blend = bg.float() + peak[:, None].clamp(0, 1) * (fg.float() - bg.float())
    assert (found - blend).abs().max() <= 2.0
    blend_all = (
        bg.float()[:, :, None, None]
        + alpha[:, None].clamp(0, 1) * (fg.float() - bg.float())[:, :, None, None]
    )
    assert (images.float() - blend_all).abs().max() <= 2.0
    size = base.shape[-1]
    glyph = factors["scale"].double() * size
    base_x, base_y = _centroid(base[:, 0].float())
    expected_x = factors["pos_x"].double() * canvas - glyph / 2 + base_x * glyph / size
    expected_y = factors["pos_y"].double() * canvas - glyph / 2 + base_y * glyph / size
    found_x, found_y = _centroid(alpha.clamp(0, 1))
    assert (found_x - expected_x).abs().max() < 0.35 and (found_y - expected_y).abs().max() < 0.35
    mass_ratio = alpha.clamp(0, 1).sum((1, 2)) / (base.float() / 255).sum((1, 2, 3))
    torch.testing.assert_close(mass_ratio.double(), (glyph / size).square(), rtol=0.06, atol=0)


def test_render_styled_matches_recorded_factors_on_synthetic_glyphs() -> None:
    base = torch.zeros(64, 1, 12, 12, dtype=torch.uint8)
    base[:, :, 3:10, 3:9] = 255
    base[:, :, 2, 2:10] = 128  # asymmetric, so a flipped or shifted render would show
    params = sample_style_params(
        64, base_size=12, canvas=20, min_scale=0.6, max_scale=1.0, generator=seeded_generator(5)
    )
    images = render_styled(base, params, canvas=20)
    assert images.shape == (64, 3, 20, 20) and images.dtype == torch.uint8
    check_styled_factors(images, base, params, canvas=20, min_peak_alpha=0.995)


def test_styled_mnist_factors_are_rendered_and_items_align_with_base(mnist_root: Path) -> None:
    options = {"root": str(mnist_root), "limit": 64, "val_fraction": 0.25}
    styled = load_dataset("styled-mnist", options, seed=2)
    base = load_dataset("mnist", options, seed=2)
    assert styled.image_shape == (3, 40, 40) and styled.name == "styled-mnist"
    assert torch.equal(styled.val.labels, base.val.labels) and torch.equal(
        styled.train.labels, base.train.labels
    )
    assert styled.train.factor_kinds == {
        "pos_x": "continuous",
        "pos_y": "continuous",
        "scale": "continuous",
        "fg_color": "discrete",
        "bg_color": "discrete",
    }
    check_styled_factors(styled.train.images, base.train.images, styled.train.factors, 40, min_peak_alpha=0.8)
    scale = styled.train.factors["scale"]
    assert scale.min() >= 0.6 and scale.max() <= 1.0 and scale.std() > 0.05


def test_styled_digits_is_deterministic_and_style_ignores_run_seed() -> None:
    options = {"limit": 40, "val_fraction": 0.0}
    a = load_dataset("styled-digits", options, seed=0)
    b = load_dataset("styled-digits", options, seed=7)
    c = load_dataset("styled-digits", {**options, "data_seed": 1}, seed=0)
    assert a.image_shape == (3, 16, 16)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, c.train.images)
    # data_seed is shared with the digits base (it also picks the test items); content = base labels.
    base = load_dataset("digits", {**options, "data_seed": 1}, seed=0)
    assert torch.equal(c.train.labels, base.train.labels) and torch.equal(c.test.labels, base.test.labels)
    with pytest.raises(ValueError, match="canvas"):
        load_dataset("styled-digits", {"canvas": 7})


# --------------------------------------------------------------------------- shapes


def test_shapes_recorded_factors_are_drawn() -> None:
    size = 48
    params = sample_shape_params(300, size=size, min_scale=0.5, max_scale=1.0, generator=seeded_generator(1))
    images = draw_shapes(params, size=size, chunk=128)
    mask = images.amax(1) > 0
    colors = torch.tensor([rgb for _, rgb in SHAPE_COLORS], dtype=torch.uint8)
    # Colour: every lit pixel has the recorded colour, the rest is black.
    lit = images.permute(0, 2, 3, 1)[mask]
    item = torch.arange(300)[:, None, None].expand_as(mask)[mask]
    assert torch.equal(lit, colors[params["color"]][item])
    # Position: every shape has its centroid at its centre.
    cx, cy = _centroid(mask.float())
    assert (cx - params["pos_x"] * size).abs().max() < 0.5 and (cy - params["pos_y"] * size).abs().max() < 0.5
    # Scale: area = analytic area of the unit shape times R^2.
    unit_area = torch.tensor([2.0, math.pi * 0.64, 3 * math.sqrt(3) / 4, 2 * 1.9 * 0.6 - 0.36])
    radius = params["scale"] * size / 3
    expected = unit_area[params["shape"]] * radius.square()
    torch.testing.assert_close(mask.sum((1, 2)).float(), expected, rtol=0.12, atol=0)
    # Orientation: an unrotated triangle points up, R above and R/2 below its centre.
    rows = torch.arange(size)[:, None].expand(size, size)
    triangle = {k: v[:1].clone() for k, v in params.items()}
    triangle.update(shape=torch.tensor([2]), orientation=torch.tensor([0.0]), scale=torch.tensor([1.0]))
    triangle.update(pos_x=torch.tensor([0.5]), pos_y=torch.tensor([0.5]))
    drawn = draw_shapes(triangle, size=size).amax(1)[0] > 0
    top, bottom = rows[drawn].min().item(), rows[drawn].max().item()
    assert abs(24 - 16 - top) <= 1 and abs(24 + 8 - bottom - 1) <= 1
    flipped = dict(triangle, orientation=torch.tensor([math.pi]))
    upside_down = draw_shapes(flipped, size=size).amax(1)[0] > 0
    assert torch.equal(upside_down, drawn.flip(0))


def test_shapes_dataset_is_deterministic_and_split() -> None:
    options = {"num_items": 500, "size": 24, "limit": 100}
    a, b = load_dataset("shapes", options, seed=0), load_dataset("shapes", options, seed=0)
    c = load_dataset("shapes", {**options, "data_seed": 3}, seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (90, 10, 100) and a.image_shape == (3, 24, 24)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.test.images, c.test.images)
    assert a.num_classes == 4 and set(a.train.factors) == {"scale", "orientation", "pos_x", "pos_y", "color"}
    assert a.train.factor_kinds["color"] == "discrete" and a.train.factor_kinds["scale"] == "continuous"
    # Unlimited loading draws the same items, so the limited set is a subset of it.
    full = load_dataset("shapes", {"num_items": 500, "size": 24}, seed=0)
    assert torch.equal(full.test.images[:100], a.test.images)


# --------------------------------------------------------------------------- paired


def test_paired_digits_and_split_modalities() -> None:
    paired, plain = load_dataset("paired-digits", {"limit": 30}), load_dataset("digits", {"limit": 30})
    assert paired.paired and not plain.paired and paired.name == "paired-digits"
    assert torch.equal(paired.train.images, plain.train.images)
    views = torch.rand(5, 2, 3, 8, 6)
    top, bottom = split_modalities(views)
    assert top.shape == bottom.shape == (5, 2, 3, 4, 6)
    assert torch.equal(torch.cat([top, bottom], dim=-2), views)
    odd_top, odd_bottom = split_modalities(torch.zeros(1, 7, 3))
    assert odd_top.shape == (1, 3, 3) and odd_bottom.shape == (1, 4, 3)
    with pytest.raises(ValueError, match="shape"):
        split_modalities(torch.zeros(4, 4))


# --------------------------------------------------------------------------- containers


def test_from_tensors_converts_and_infers() -> None:
    images = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]]).repeat(3, 1, 1)  # (N, H, W) floats
    data = TensorData.from_tensors(images, [0, 2, 1], factors={"angle": [0.1, 0.2, 0.3], "flip": [1, 0, 1]})
    assert data.images.shape == (3, 1, 2, 2) and data.images.dtype == torch.float32
    assert data.float_images()[0, 0].tolist() == [[0.0, 0.5], [1.0, 0.25]]  # floats are not quantised
    assert data.num_classes == 3 and data.labels.dtype == torch.int64
    assert data.factor_kinds == {"angle": "continuous", "flip": "discrete"}
    assert data.factors["angle"].dtype == torch.float32 and data.factors["flip"].dtype == torch.int64
    assert TensorData.from_tensors(torch.zeros(2, 3, 4, 4, dtype=torch.uint8)).labels.tolist() == [0, 0]


def test_float_images_outside_unit_interval_are_kept_for_the_likelihood_to_judge() -> None:
    data = TensorData.from_tensors(torch.full((2, 1, 3, 3), -0.5), [0, 1])
    assert float(data.float_images().min()) == -0.5


@pytest.mark.parametrize(
    "images, error, match",
    [
        (torch.full((2, 1, 3, 3), float("nan")), ValueError, "NaN"),
        (torch.full((2, 1, 3, 3), float("inf")), ValueError, "infinite"),
        (torch.zeros(4, 4), ValueError, "dims"),
        (torch.zeros(1, 1, 1, 4, 4), ValueError, "dims"),
        (torch.zeros(2, 5, 4, 4), ValueError, "channels"),
        (torch.zeros(2, 4, 4, dtype=torch.int32), TypeError, "int32"),
        (torch.zeros(0, 1, 4, 4), ValueError, "empty"),
    ],
)
def test_from_tensors_rejects_bad_images(images: torch.Tensor, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TensorData.from_tensors(images)


def test_validate_images_names_the_argument() -> None:
    with pytest.raises(TypeError, match="my_images must be a torch.Tensor"):
        validate_images([[0.0]], name="my_images")
    validate_images(torch.rand(2, 3, 4, 4), name="ok")


def test_from_tensors_rejects_bad_labels_and_factors() -> None:
    images = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        TensorData.from_tensors(images, [0, 1])
    with pytest.raises(TypeError, match="labels must be integers"):
        TensorData.from_tensors(images, [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="factor 'x'"):
        TensorData.from_tensors(images, factors={"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match="num_classes=2"):
        TensorData.from_tensors(images, [0, 1, 2], num_classes=2)
    with pytest.raises(ValueError, match="factor kind"):
        TensorData.from_tensors(images, factors={"x": [1, 2, 3]}, factor_kinds={"x": "ordinal"})


def test_tensor_data_subset_float_images_and_shape() -> None:
    data = TensorData.from_tensors(
        torch.arange(5 * 12, dtype=torch.uint8).reshape(5, 3, 2, 2),
        [0, 1, 0, 1, 3],
        factors={"s": torch.rand(5)},
    )
    assert len(data) == 5 and data.image_shape == (3, 2, 2) and data.num_classes == 4
    part = data.subset(torch.tensor([4, 1]))
    assert part.labels.tolist() == [3, 1] and part.num_classes == 4
    assert torch.equal(part.factors["s"], data.factors["s"][[4, 1]])
    floats = data.float_images(torch.tensor([1, 2]))
    assert floats.dtype == torch.float32 and floats.shape == (2, 3, 2, 2)
    torch.testing.assert_close(floats, data.images[1:3].float() / 255)
    assert data.float_images(slice(0, 2), device="cpu").shape == (2, 3, 2, 2)
    assert float(data.float_images().max()) <= 1.0
    mask = data.subset(data.labels == 1)
    assert len(mask) == 2


def test_from_torch_dataset_accepts_pil_and_tensors() -> None:
    from PIL import Image

    class PilSet(torch.utils.data.Dataset):
        classes = ["a", "b", "c"]

        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> tuple:
            return Image.fromarray(np.full((4, 5, 3), 40 * i, dtype=np.uint8)), i % 2

    data = TensorData.from_torch_dataset(PilSet())
    assert data.images.shape == (3, 3, 4, 5) and data.num_classes == 3
    assert data.images[2].unique().tolist() == [80] and data.labels.tolist() == [0, 1, 0]

    class TensorSet(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple:
            return torch.full((6, 6), 1.0 * i), torch.tensor(i)

    grey = TensorData.from_torch_dataset(TensorSet())
    assert grey.images.shape == (2, 1, 6, 6) and grey.images[1].unique().tolist() == [255]


def test_data_not_found_error_pickles() -> None:
    err = DataNotFoundError("mnist", [Path("/a")], ["get it"])
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.dataset == "mnist" and again.tried == [Path("/a")]


# --------------------------------------------------------------------------- conformance battery


def conformance_options(name: str, roots: dict[str, Path]) -> dict:
    """Small offline options for every registered data set; a new name must be added here."""
    base = name.split("-", 1)[1] if "-" in name else name
    options: dict = {"limit": 24}
    if base in roots:
        options["root"] = str(roots[base])
    if base == "shapes":
        options.update(num_items=80, size=16)
    if base == "celeba":
        options.update(image_size=8, cache=False)
    return options


@pytest.mark.parametrize("name", dataset_names())
def test_every_registered_data_set_conforms(
    name: str, fake_roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mnist_module, "DEBIAN_FASHION_MNIST", Path("/nonexistent"))
    splits = load_dataset(name, conformance_options(name, fake_roots), seed=1)
    assert isinstance(splits, DataSplits) and splits.name == name
    assert splits.paired == name.startswith("paired-")
    assert len(splits.train) > 0 and len(splits.test) > 0
    for data in (splits.train, splits.val, splits.test):
        assert data.images.dtype == torch.uint8 and data.images.ndim == 4
        assert data.image_shape == splits.image_shape
        assert data.labels.dtype == torch.int64 and data.labels.shape == (len(data),)
        if len(data):
            assert 0 <= int(data.labels.min()) and int(data.labels.max()) < splits.num_classes
        assert set(data.factors) == set(data.factor_kinds)
        for key, value in data.factors.items():
            assert value.shape == (len(data),)
            assert value.dtype == (torch.float32 if data.factor_kinds[key] == "continuous" else torch.int64)
    assert DATASETS.entry(name).help
    again = load_dataset(name, conformance_options(name, fake_roots), seed=1)
    assert torch.equal(again.train.images, splits.train.images)  # deterministic for a seed


def test_palette_colours_are_distinct() -> None:
    rgb = torch.tensor([c for _, c in PALETTE], dtype=torch.float32)
    distances = torch.cdist(rgb, rgb) + torch.eye(len(rgb)) * 1e9
    assert distances.min() > 100


def test_mnist_tests_look_beside_the_clone_and_ci_requires_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """MNIST is found relative to the repository root; `.ci/run` makes its tests fail, not skip."""
    from conftest import REPO_ROOT, find_shared_mnist

    monkeypatch.delenv("PSSL_TEST_MNIST", raising=False)
    _, tried = find_shared_mnist()
    assert tried[0] == REPO_ROOT.parent / "shared" / "data" / "mnist"  # ../shared/data/mnist first
    # only <an ancestor of the repository root>/shared/data/mnist, no machine-specific absolute path
    assert all(
        p.parts[-3:] == ("shared", "data", "mnist") and REPO_ROOT.is_relative_to(p.parents[2]) for p in tried
    )
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "export PSSL_REQUIRE_MNIST=1" in ci
    assert ci.index("export PSSL_REQUIRE_MNIST=1") < ci.index("python3 -m pytest")
