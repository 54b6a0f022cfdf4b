"""hfssl.serving.vision_handlers: nearest reference images and the head's prediction. No gradio needed."""

import shutil

import numpy as np
import pytest

from hfssl.run.errors import InputError
from hfssl.serving import ModelStore, neighbours


@pytest.fixture
def bar_image():
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[5:15, 8:12] = 255  # a bar, like a digit one
    return image


def test_vision_neighbours_and_prediction(models_root, simclr_dir, bar_image):
    shutil.copytree(simclr_dir, models_root / "simclr")
    store = ModelStore(models_root)
    assert store.local_models("vision") == ["simclr"] and store.local_models("causal_lm") == ["gpt"]
    gallery, prediction = neighbours(store, "simclr", bar_image, "digits", k=3)
    assert len(gallery) == 3 and all(isinstance(caption, str) and "cos" in caption for _, caption in gallery)
    sims = [float(caption.split("cos ")[1].rstrip(")")) for _, caption in gallery]
    assert sims == sorted(sims, reverse=True) and all(-1 <= v <= 1 for v in sims)
    assert prediction == "this encoder has no classification head"
    with pytest.raises(ValueError, match="Upload an image"):
        neighbours(store, "simclr", None, "digits")

    from transformers import AutoModelForImageClassification

    classifier = AutoModelForImageClassification.from_pretrained(
        simclr_dir, num_labels=3, id2label={0: "zero", 1: "one", 2: "two"}
    )
    classifier.save_pretrained(models_root / "classifier")
    shutil.copy(simclr_dir / "preprocessor_config.json", models_root / "classifier")
    _, prediction = neighbours(store, "classifier", bar_image, "digits", k=2)
    probabilities = dict(part.split(": ") for part in prediction.split(", "))
    assert set(probabilities) == {"zero", "one", "two"}
    assert sum(float(p) for p in probabilities.values()) == pytest.approx(1.0, abs=0.02)


def test_reference_images_outside_the_models_root_are_refused(models_root, simclr_dir, tmp_path, bar_image):
    shutil.copytree(simclr_dir, models_root / "simclr")
    store = ModelStore(models_root)
    for outside in ["../secret", str(tmp_path / "secret")]:
        with pytest.raises(InputError, match="under the models root"):
            neighbours(store, "simclr", bar_image, outside)
