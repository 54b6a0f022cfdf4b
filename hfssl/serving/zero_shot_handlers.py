"""The zero-shot tab's handler: an uploaded image's probabilities over labels the user types, from an image-text dual
encoder (each label in a caption template, or a prompt ensemble; `hfssl.models.dual_encoder`)."""

import torch

from ..data.caption_templates import TEMPLATE_SETS, check_template
from ..models.dual_encoder import check_class_names, class_embeddings, zero_shot_logits
from ..run.errors import InputError
from .model_store import ModelStore

ENSEMBLE_CHOICES = {"one template": None, **{f"{name} ensemble ({len(t)})": name for name, t in TEMPLATE_SETS.items()}}


def _templates(template: str, ensemble: str) -> tuple[str, ...]:
    if ensemble not in ENSEMBLE_CHOICES:
        raise InputError(f"Unknown prompt ensemble {ensemble!r}: choose one of {', '.join(ENSEMBLE_CHOICES)}.")
    chosen = ENSEMBLE_CHOICES[ensemble]
    return TEMPLATE_SETS[chosen] if chosen else (check_template((template or "").strip()),)


def rank_labels(
    store: ModelStore, model_name: str, image, labels: str, template: str = "a photo of a {}.", ensemble: str = ""
) -> dict[str, float]:
    """{label: probability}, softmax over the labels' scaled cosine similarities to the image. `labels`: comma- or
    line-separated; `ensemble`: a name of `ENSEMBLE_CHOICES` (a prompt ensemble) or empty / "one template"."""
    import numpy as np
    from PIL import Image

    if image is None:
        raise InputError("Upload an image first.")
    names = check_class_names([x for x in (labels or "").replace("\n", ",").split(",") if x.strip()])
    templates = _templates(template, ensemble or "one template")
    model, tokenizer, processor = store.dual_encoder(model_name)
    pixels = processor(images=Image.fromarray(np.asarray(image)).convert("RGB"), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = zero_shot_logits(model, pixels, class_embeddings(model, tokenizer, names, templates))[0]
    return dict(zip(names, logits.softmax(-1).tolist()))
