"""hfssl.serving.zero_shot_handlers: an image's probabilities over typed labels from a dual encoder. No gradio."""

import shutil

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

from hfssl.data.caption_templates import CIFAR_TEMPLATES
from hfssl.models.dual_encoder import class_embeddings, zero_shot_logits
from hfssl.run.errors import InputError
from hfssl.serving import ModelStore, rank_labels
from tests.models.test_modeling_clip import _saved

IMAGE = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)


@pytest.fixture
def store(models_root, tmp_path, tiny_encoder_tokenizer) -> ModelStore:
    _, path = _saved(tmp_path, tiny_encoder_tokenizer)
    shutil.copytree(path, models_root / "clip")
    return ModelStore(models_root)


def test_the_probabilities_are_the_zero_shot_pipelines(store, models_root):
    assert store.local_models("image_text") == ["clip"] and "clip" not in store.local_models("vision")
    ranked = rank_labels(store, "clip", IMAGE, "cat, dog,\nship", "a photo of a {}.")
    expected = pipeline("zero-shot-image-classification", model=str(models_root / "clip"))(
        Image.fromarray(IMAGE), candidate_labels=["cat", "dog", "ship"], hypothesis_template="a photo of a {}."
    )
    assert list(ranked) == ["cat", "dog", "ship"] and sum(ranked.values()) == pytest.approx(1.0)
    for row in expected:
        assert ranked[row["label"]] == pytest.approx(row["score"], abs=1e-5)
    ensemble = rank_labels(store, "clip", IMAGE, "cat, dog", ensemble="cifar ensemble (18)")
    model, tokenizer, processor = store.dual_encoder("clip")
    pixels = processor(images=Image.fromarray(IMAGE), return_tensors="pt")["pixel_values"]
    classes = class_embeddings(model, tokenizer, ["cat", "dog"], CIFAR_TEMPLATES)  # the 18 templates, averaged
    expected = zero_shot_logits(model, pixels, classes)[0].softmax(-1).tolist()
    assert list(ensemble.values()) == pytest.approx(expected, abs=1e-6)
    assert ensemble["cat"] != pytest.approx(rank_labels(store, "clip", IMAGE, "cat, dog")["cat"], abs=1e-6)


@pytest.mark.parametrize(
    "image, labels, template, message",
    [
        (None, "cat, dog", "a photo of a {}.", "Upload an image first"),
        (IMAGE, "cat", "a photo of a {}.", "at least 2 class names"),
        (IMAGE, "cat, dog, cat", "a photo of a {}.", "given more than once: cat"),
        (IMAGE, "cat, dog", "a photo", "needs exactly one {}"),
        (IMAGE, "cat, dog", "a {photo} of a {}", "no other braces"),
    ],
)
def test_what_cannot_be_classified_is_said(store, image, labels, template, message):
    with pytest.raises(InputError, match=message):
        rank_labels(store, "clip", image, labels, template)


def test_an_unknown_ensemble_is_refused(store):
    with pytest.raises(InputError, match="Unknown prompt ensemble 'all of them'"):
        rank_labels(store, "clip", IMAGE, "cat, dog", ensemble="all of them")
