"""Image-caption pairs: captions from class names in templates, from a caption column (one or several per image),
from a CSV of image paths; the per-step draw; and the errors that name the row."""

import io

import datasets
import numpy as np
import pytest
import torch
from packaging.version import Version
from PIL import Image

from hfssl.data.caption_templates import CIFAR_TEMPLATES, OPENAI_IMAGENET_TEMPLATES, TEMPLATE_SETS, read_templates
from hfssl.data.image_text import draw_captions, load_captioned_images
from hfssl.run.errors import InputError


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_labelled_images_are_captioned_by_every_template_of_their_class():
    data = load_captioned_images("digits", templates=("a photo of a {}.", "a drawing of the {}."), image_size=8)
    assert len(data.captions) == 20 and data.options.shape == (1797, 2)
    for i in (0, 5, 100):
        label = int(data.images.labels[i])
        assert [data.captions[j] for j in data.options[i]] == [f"a photo of a {label}.", f"a drawing of the {label}."]


def test_class_names_replace_the_data_sets_own_in_label_order():
    words = "zero one two three four five six seven eight nine".split()
    data = load_captioned_images("digits", templates=("{}",), image_size=8, class_names=words)
    assert data.captions == words
    with pytest.raises(InputError, match="gives 2 names; built-in digits has 10 classes"):
        load_captioned_images("digits", templates=("{}",), image_size=8, class_names=["a", "b"])


def test_a_caption_column_with_one_or_several_captions_per_image(tmp_path):
    path = tmp_path / "pairs.parquet"
    images = [{"bytes": _png(v), "path": f"{v}.png"} for v in (10, 20, 30)]
    captions = [["a red cup", "a cup"], ["a dog"], ["a cup"]]
    datasets.Dataset.from_dict({"image": images, "caption": captions}).cast_column(
        "image", datasets.Image()
    ).to_parquet(path)
    data = load_captioned_images(str(path), templates=("{}",), image_size=4)
    assert data.captions == ["a red cup", "a cup", "a dog"]  # each distinct caption once
    assert data.options.tolist() == [[0, 1], [2, -1], [1, -1]]
    assert data.described == "column 'caption'"


def test_a_csv_names_its_images_by_paths_relative_to_itself(tmp_path):
    (tmp_path / "images").mkdir()
    for name, value in (("a.png", 0), ("b.png", 255)):
        (tmp_path / "images" / name).write_bytes(_png(value))
    (tmp_path / "pairs.csv").write_text("image,text\nimages/a.png,a black square\nimages/b.png,a white square\n")
    data = load_captioned_images(str(tmp_path / "pairs.csv"), templates=("{}",), image_size=4)
    assert data.captions == ["a black square", "a white square"]
    assert int(data.images.pixels[0].max()) == 0 and int(data.images.pixels[1].min()) == 255


def test_the_draw_is_uniform_over_each_images_own_captions():
    options = torch.tensor([[0, 1, 2], [3, -1, -1], [4, 5, -1]])
    draws = torch.stack([draw_captions(options, torch.Generator().manual_seed(s)) for s in range(3000)])  # (3000, 3)
    assert set(draws[:, 0].tolist()) == {0, 1, 2} and set(draws[:, 1].tolist()) == {3}
    assert set(draws[:, 2].tolist()) == {4, 5}
    share = (draws[:, 0] == 0).float().mean().item()
    assert abs(share - 1 / 3) < 0.03  # 3000 draws: 4 standard errors


def test_an_image_without_a_caption_is_named_by_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    images = [{"bytes": _png(v), "path": f"{v}.png"} for v in (10, 20)]
    datasets.Dataset.from_dict({"image": images, "text": ["a cup", "  "]}).cast_column(
        "image", datasets.Image()
    ).to_parquet(path)
    with pytest.raises(InputError, match="column 'text', row 2: no caption"):
        load_captioned_images(str(path), templates=("{}",), image_size=4)
    with pytest.raises(InputError, match="has no caption column 'caption'; its columns are"):
        load_captioned_images(str(path), templates=("{}",), image_size=4, caption_column="caption")


def test_template_sets_and_files(tmp_path):
    assert len(CIFAR_TEMPLATES) == 18 and len(OPENAI_IMAGENET_TEMPLATES) == 80
    assert all(t.count("{}") == 1 for templates in TEMPLATE_SETS.values() for t in templates)
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("a photo of a {}.\n\na sketch of a {}.\n")
    bad.write_text("a photo of a {}.\na photo\n")
    assert read_templates(str(good)) == ("a photo of a {}.", "a sketch of a {}.")
    with pytest.raises(InputError, match=r"template 2 \('a photo'\) needs exactly one"):
        read_templates(str(bad))
    bad.write_text("a {photo} of a {}.\n")
    with pytest.raises(InputError, match="no other braces"):
        read_templates(str(bad))


@pytest.mark.skipif(
    Version(datasets.__version__) < Version("4"),
    reason="datasets 3.x's imagefolder refuses a metadata.csv whose file_name column today's pandas reads as "
    "large_string ('`file_name` key must be a string'); datasets 4 and later read it",
)
def test_an_image_folder_takes_its_captions_from_metadata_csv(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name, value in (("a.png", 0), ("b.png", 255)):
        (folder / name).write_bytes(_png(value))
    (folder / "metadata.csv").write_text("file_name,text\na.png,a black square\nb.png,a white square\n")
    data = load_captioned_images(str(folder), templates=("{}",), image_size=4)
    assert sorted(data.captions) == ["a black square", "a white square"]
    black = data.captions.index("a black square")
    assert int(data.images.pixels[int((data.options[:, 0] == black).nonzero()[0])].max()) == 0


def test_unlabelled_images_cannot_be_captioned_from_class_names(tmp_path):
    path = tmp_path / "partly.parquet"
    images = [{"bytes": _png(v), "path": f"{v}.png"} for v in (10, 20, 30)]
    labels = datasets.ClassLabel(names=["cat", "dog"])
    features = datasets.Features({"image": datasets.Image(), "label": labels})
    datasets.Dataset.from_dict({"image": images, "label": [0, -1, 1]}, features=features).to_parquet(path)
    with pytest.raises(InputError, match="has 1 images without a label"):
        load_captioned_images(str(path), templates=("{}",), image_size=4)
