"""SimCLR model tests: shapes for each backbone, loss, save/load, Auto classes, pipelines, trust_remote_code."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification, ViTImageProcessor, pipeline

from hfssl import SimCLRConfig, SimCLRForImageClassification, SimCLRModel
from hfssl.losses import NTXentLoss
from tests.conftest import why_failed

B, S = 4, 16


def tiny_config(**overrides) -> SimCLRConfig:
    kwargs = dict(image_size=S, resnet_layers=[1, 1], resnet_widths=[8, 16], projection_dims=[32, 8])
    kwargs.update(overrides)
    return SimCLRConfig(**kwargs)


def _images(seed=0, batch=B):
    return torch.randn(batch, 3, S, S, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "overrides, features, projections",
    [
        ({}, 16, 8),
        ({"stem": "imagenet"}, 16, 8),
        ({"backbone": "vit", "patch_size": 4, "vit_hidden_size": 24, "vit_layers": 2, "vit_heads": 3}, 24, 8),
        ({"projection_dims": []}, 16, 16),  # no head: z = h
    ],
)
def test_shapes(overrides, features, projections):
    model = SimCLRModel(tiny_config(**overrides)).eval()
    one = model(_images())
    assert one.embeddings.shape == (B, features) and one.loss is None
    two = model(_images(0), _images(1))
    assert two.embeddings.shape == (2 * B, features) and two.projections.shape == (2 * B, projections)
    assert two.loss.ndim == 0 and torch.isfinite(two.loss)


def test_config_validation():
    with pytest.raises(ValueError, match="backbone"):
        SimCLRConfig(backbone="vgg")
    with pytest.raises(ValueError, match="one entry per stage"):
        SimCLRConfig(resnet_layers=[1, 1], resnet_widths=[8])
    with pytest.raises(ValueError, match="multiple of patch_size"):
        SimCLRConfig(backbone="vit", image_size=30, patch_size=4)


def test_model_loss_is_nt_xent_of_its_projections():
    model = SimCLRModel(tiny_config(contrastive_temperature=0.3)).eval()
    out = model(_images(0), _images(1))
    z_a, z_b = out.projections.chunk(2)
    torch.testing.assert_close(out.loss, NTXentLoss(0.3)(z_a, z_b))


def test_save_load_round_trip_and_classifier_from_pretrained(tmp_path):
    model = SimCLRModel(tiny_config()).eval()
    x = _images()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is SimCLRModel
    torch.testing.assert_close(reloaded(x).embeddings, model(x).embeddings)
    classifier, info = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert type(classifier) is SimCLRForImageClassification
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    classifier.eval()
    torch.testing.assert_close(classifier(x).hidden_states[0], model(x).embeddings)  # the encoder came along
    out = classifier(x, labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (B, 3) and out.loss.ndim == 0


def _save_with_processor(path, num_labels=None):
    config = tiny_config()
    if num_labels:
        config.id2label = {i: f"class_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    SimCLRModel(config).save_pretrained(path)
    ViTImageProcessor(size={"height": S, "width": S}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(path)


def test_pipelines_load_the_saved_folder(tmp_path):
    _save_with_processor(tmp_path, num_labels=3)
    assert isinstance(AutoImageProcessor.from_pretrained(tmp_path), ViTImageProcessor)
    rng = np.random.default_rng(0)
    gray_odd = Image.fromarray(rng.integers(0, 255, (21, 13), dtype=np.uint8))  # grayscale, odd size
    rgba = Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8), mode="RGBA")
    features = pipeline("image-feature-extraction", model=str(tmp_path))
    assert np.array(features(gray_odd, pool=True)).shape == (1, 16)
    classify = pipeline("image-classification", model=str(tmp_path))
    predictions = classify(rgba, top_k=3)
    assert {p["label"] for p in predictions} == {"class_0", "class_1", "class_2"}
    assert sum(p["score"] for p in predictions) == pytest.approx(1.0, abs=1e-5)


def test_trust_remote_code_without_hfssl(tmp_path):
    model = SimCLRModel(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_simclr.py").is_file()
    x = _images()
    torch.save({"x": x, "h": model(x).embeddings}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoModelForImageClassification
        model = AutoModel.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).eval()
        assert "hfssl" not in sys.modules
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        torch.testing.assert_close(model(expected["x"]).embeddings, expected["h"])
        AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}, trust_remote_code=True, num_labels=2)
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == 0 and "OK" in result.stdout, why_failed(result, 3000)
