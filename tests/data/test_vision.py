"""Image loading (built-in, parquet, image folder), conversions, corrupt files, and batch augmentation."""

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hfssl.data.vision import Normalize, SimCLRAugmentation, channel_stats, load_images


def _png_bytes(array: np.ndarray, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_builtin_digits():
    data = load_images("digits", image_size=16)
    assert data.pixels.shape == (1797, 3, 16, 16) and data.pixels.dtype == torch.uint8
    assert data.labels.shape == (1797,) and set(data.labels.tolist()) == set(range(10))
    assert data.label_names == [str(i) for i in range(10)]
    assert data.pixels.max() == 255 and data.pixels.min() == 0


def test_parquet_with_mixed_modes_and_sizes(tmp_path, cache):
    rng = np.random.default_rng(0)
    images = [
        {"bytes": _png_bytes(rng.integers(0, 255, (10, 12), dtype=np.uint8)), "path": None},  # grayscale, odd size
        {"bytes": _png_bytes(rng.integers(0, 255, (20, 20, 4), dtype=np.uint8), "RGBA"), "path": None},
        {"bytes": _png_bytes(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)), "path": None},
    ]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 1]}, features=features).to_parquet(path)
    data = load_images(str(path), image_size=8)
    assert data.pixels.shape == (3, 3, 8, 8)
    assert data.labels.tolist() == [0, 1, 1] and data.label_names == ["cat", "dog"]
    assert any(cache.rglob("*.pt"))  # decoded once, cached
    again = load_images(str(path), image_size=8)
    assert torch.equal(again.pixels, data.pixels)


def test_image_folder_and_corrupt_file_named(tmp_path, cache):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(
                tmp_path / "imgs" / label / f"{i}.png"
            )
    data = load_images(str(tmp_path / "imgs"), image_size=9)
    assert data.pixels.shape == (4, 3, 9, 9) and data.label_names == ["a", "b"]
    (tmp_path / "imgs" / "b" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_images(str(tmp_path / "imgs"), image_size=9)


def test_missing_image_column_and_missing_path(tmp_path, cache):
    path = tmp_path / "t.parquet"
    datasets.Dataset.from_dict({"text": ["x"], "label": [0]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"no image column 'image'.*\['text', 'label'\]"):
        load_images(str(path))
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_images(str(tmp_path / "nothing_here.parquet"))


def test_augmentation_is_seeded_per_image_and_normalised():
    pixels = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).expand(8, -1, -1, -1).contiguous()
    mean, std = channel_stats(pixels)
    augment = SimCLRAugmentation(16, mean, std, blur=True)
    torch.manual_seed(3)
    a = augment(pixels)
    torch.manual_seed(3)
    b = augment(pixels)
    torch.manual_seed(4)
    c = augment(pixels)
    assert a.shape == (8, 3, 16, 16) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)  # same seed, same views
    assert not torch.allclose(a, c)  # another seed, other views
    # one image repeated 8 times gets 8 different views: parameters are drawn per image, not per batch
    assert len({tuple(v.flatten()[:32].tolist()) for v in a}) == 8
    # values are images in [0, 1] before normalisation
    unnormalised = a * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert unnormalised.min() >= -1e-5 and unnormalised.max() <= 1 + 1e-5


def test_normalize_matches_channel_stats():
    pixels = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(pixels)
    x = Normalize(mean, std)(pixels)
    torch.testing.assert_close(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_unreachable_hub_image_dataset(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="Could not load Hub dataset someone/no_such_images"):
        load_images("someone/no_such_images")
