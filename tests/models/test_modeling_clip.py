"""The CLIP-style dual encoder: the math of its logits, cached tower outputs, save/load, the Auto classes, transformers'
zero-shot pipeline, trust_remote_code without hfssl, and building it from pretrained towers."""

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForZeroShotImageClassification, BertConfig, ViTImageProcessor, pipeline

from hfssl import DualEncoderConfig, DualEncoderModel, SimCLRConfig
from hfssl.models.dual_encoder import build_dual_encoder
from hfssl.run.errors import InputError
from tests.conftest import why_failed

S = 8
IMAGE = SimCLRConfig(image_size=S, resnet_layers=[1, 1], resnet_widths=[8, 16])
TEXT = BertConfig(
    vocab_size=100,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=32,
)


def tiny_dual_encoder(**overrides) -> DualEncoderModel:
    torch.manual_seed(0)
    kwargs = dict(image_encoder_config=IMAGE, text_encoder_config=TEXT, projection_dim=16)
    kwargs.update(overrides)
    return DualEncoderModel(DualEncoderConfig(**kwargs)).eval()


def _inputs(seed=0, images=3, texts=4):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (texts, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # one padded caption
    return torch.randn(images, 3, S, S, generator=g), ids, mask


def test_the_logits_are_the_scaled_cosines_of_the_projected_pooled_towers():
    model = tiny_dual_encoder()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask)
        h_image = model.image_encoder(pixel_values=pixels).pooler_output  # SimCLR's backbone features (3, 16)
        hidden = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        h_text = torch.stack([hidden[i, mask[i].bool()].mean(0) for i in range(4)])  # mean over real tokens
        u = torch.nn.functional.normalize(h_image @ model.image_projection.weight.T, dim=1)
        v = torch.nn.functional.normalize(h_text @ model.text_projection.weight.T, dim=1)
    assert out.logits_per_image.shape == (3, 4) and out.logits_per_text.shape == (4, 3)
    torch.testing.assert_close(out.logits_per_image, (1 / 0.07) * u @ v.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.T)
    assert float(out.logit_scale) == pytest.approx(1 / 0.07, rel=1e-5)


def test_the_scale_is_clamped_at_100_and_the_loss_is_the_image_text_loss():
    model = tiny_dual_encoder()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    pixels, ids, mask = _inputs(images=4)
    out = model(input_ids=ids, pixel_values=pixels, attention_mask=mask, return_loss=True)
    assert float(out.logit_scale.detach()) == pytest.approx(100.0)
    from hfssl.losses import ImageTextContrastiveLoss

    expected = ImageTextContrastiveLoss()(out.image_embeds, out.text_embeds, 100.0)
    torch.testing.assert_close(out.loss, expected)


def test_cached_tower_outputs_give_the_same_logits_as_the_inputs():
    model = tiny_dual_encoder()
    pixels, ids, mask = _inputs()
    with torch.no_grad():
        direct = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits_per_image
        cached = model(
            image_tower_features=model.image_tower_features(pixels),
            text_tower_features=model.text_tower_features(ids, mask),
        ).logits_per_image
    torch.testing.assert_close(cached, direct)


def test_a_config_without_a_text_tower_or_with_an_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="needs text_encoder_config"):
        DualEncoderModel(DualEncoderConfig(image_encoder_config=IMAGE))
    with pytest.raises(ValueError, match="pooling 'max' is not one hfssl knows"):
        DualEncoderConfig(text_encoder_config=TEXT, text_pooling="max")
    with pytest.raises(ValueError, match="needs its model_type"):
        DualEncoderConfig(text_encoder_config={"hidden_size": 8})


def _saved(tmp_path, tokenizer, logit_scale: float | None = None) -> tuple:
    model = tiny_dual_encoder(text_encoder_config=BertConfig(**{**TEXT.to_dict(), "vocab_size": len(tokenizer)}))
    if logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(logit_scale)
    path = tmp_path / "clip"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    ViTImageProcessor(size={"height": S, "width": S}, image_mean=[0.5] * 3, image_std=[0.25] * 3).save_pretrained(path)
    return model, path


def test_save_load_and_the_zero_shot_pipeline(tmp_path, tiny_encoder_tokenizer):
    model, path = _saved(tmp_path, tiny_encoder_tokenizer, logit_scale=3.0)
    assert isinstance(AutoModel.from_pretrained(path), DualEncoderModel)
    assert (
        float(AutoModel.from_pretrained(path).logit_scale.detach()) == 3.0
    )  # a learned scale is loaded, not re-initialised
    reloaded = AutoModelForZeroShotImageClassification.from_pretrained(path).eval()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (S, S, 3), dtype=np.uint8))
    labels = ["cat", "dog", "ship"]
    result = pipeline("zero-shot-image-classification", model=str(path))(image, candidate_labels=labels)
    # by hand: the processor's normalisation, each label in the pipeline's template, softmax of the logits
    pixels = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - 0.5) / 0.25
    encoded = tiny_encoder_tokenizer([f"This is a photo of {x}." for x in labels], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=pixels[None], **encoded).logits_per_image[0]
        torch.testing.assert_close(reloaded(pixel_values=pixels[None], **encoded).logits_per_image[0], logits)
    probabilities = dict(zip(labels, logits.softmax(-1).tolist()))
    assert [r["label"] for r in result] == sorted(labels, key=lambda x: -probabilities[x])
    for r in result:
        assert r["score"] == pytest.approx(probabilities[r["label"]], abs=1e-5)


def test_a_saved_dual_encoder_loads_without_hfssl_through_trust_remote_code(tmp_path, tiny_encoder_tokenizer):
    model, path = _saved(tmp_path, tiny_encoder_tokenizer)
    pixels, ids, mask = _inputs()
    ids = ids % len(tiny_encoder_tokenizer)
    with torch.no_grad():
        expected = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits_per_image
    torch.save({"pixels": pixels, "ids": ids, "mask": mask, "logits": expected}, tmp_path / "e.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForZeroShotImageClassification
        model = AutoModelForZeroShotImageClassification.from_pretrained({str(path)!r}, trust_remote_code=True).eval()
        assert "hfssl" not in sys.modules, "hfssl was imported"
        e = torch.load({str(tmp_path / "e.pt")!r})
        with torch.no_grad():
            logits = model(input_ids=e["ids"], pixel_values=e["pixels"], attention_mask=e["mask"]).logits_per_image
        torch.testing.assert_close(logits, e["logits"])
        print("OK")
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0 and "OK" in result.stdout, why_failed(result, 3000)


def test_built_from_pretrained_towers_it_keeps_their_weights(tmp_path, bert_dir, simclr_dir):
    model, tokenizer = build_dual_encoder(str(bert_dir), image_model=str(simclr_dir), projection_dim=8)
    bert, simclr = AutoModel.from_pretrained(bert_dir), AutoModel.from_pretrained(simclr_dir)
    for name, value in bert.state_dict().items():
        torch.testing.assert_close(model.text_encoder.state_dict()[name], value, msg=name)
    for name, value in simclr.encoder.state_dict().items():
        torch.testing.assert_close(model.image_encoder.encoder.state_dict()[name], value, msg=name)
    assert model.config.text_pooling == "cls"  # a plain BERT: its first token, as its classifier reads
    assert tokenizer.pad_token is not None
    fresh, _ = build_dual_encoder(str(bert_dir), text_init="random", text_pooling="mean")
    assert fresh.config.text_pooling == "mean"
    assert not torch.equal(fresh.text_encoder.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)


def test_a_causal_lm_text_tower_reads_its_last_token(tmp_path, gpt_dir):
    model, tokenizer = build_dual_encoder(str(gpt_dir), image_config=IMAGE, projection_dim=8)
    assert model.config.text_pooling == "last"
    encoded = tokenizer(["a photo of a cat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        features = model.text_tower_features(**encoded)
        hidden = model.text_encoder(**encoded).last_hidden_state
    last = encoded["attention_mask"].sum(1) - 1  # right padding
    torch.testing.assert_close(features, hidden[torch.arange(2), last])


def test_a_saved_image_tower_must_be_a_simclr_encoder(bert_dir):
    with pytest.raises(InputError, match="is a BertModel; the image tower is hfssl's SimCLR encoder"):
        build_dual_encoder(str(bert_dir), image_model=str(bert_dir))


def test_a_tower_whose_width_cannot_be_read_is_named():
    from hfssl.models.encoders.modeling_clip import tower_width

    tower = torch.nn.Module()
    tower.config = type("MysteryConfig", (), {"model_type": "mystery"})()
    with pytest.raises(ValueError, match=r"Cannot read the feature size of a Module \(model_type 'mystery'\)"):
        tower_width(tower)
