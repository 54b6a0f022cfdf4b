"""The vision tab's handler: an uploaded image's nearest neighbours among reference images (cosine similarity of an
encoder's features), and the prediction of the encoder's classification head when it has one."""

import torch

from ..run.errors import InputError
from .model_store import ModelStore

BUILTIN_REFERENCE = "digits"  # hfssl.data.vision's built-in image set
MAX_REFERENCE_IMAGES = 2000
TOP_PREDICTIONS = 3
NO_HEAD = "this encoder has no classification head"


def neighbours(store: ModelStore, encoder_name: str, image, reference: str = BUILTIN_REFERENCE, k: int = 5):
    """(the top-k most similar reference images as (pixels, caption) pairs, the head's prediction or a note that
    there is none). `reference` is the built-in "digits" or a data set under the store's root."""
    import numpy as np
    from PIL import Image

    from ..adapt.features import image_features
    from ..data.vision import Normalize, load_images

    if image is None:
        raise InputError("Upload an image first.")
    reference = (reference or "").strip() or BUILTIN_REFERENCE
    if reference != BUILTIN_REFERENCE:
        reference = store.data_path(reference)  # nothing outside the models root is read
    model, processor, has_head = store.encoder(encoder_name)
    size = model.config.image_size
    normalize = Normalize(list(processor.image_mean), list(processor.image_std))
    bank = load_images(reference, image_size=size)
    query_image = Image.fromarray(np.asarray(image)).convert("RGB").resize((size, size))
    query = torch.from_numpy(np.array(query_image)).permute(2, 0, 1)[None].contiguous()  # (1, 3, S, S) uint8
    feats = image_features(model, torch.cat([query, bank.pixels[:MAX_REFERENCE_IMAGES]]), normalize)
    feats = torch.nn.functional.normalize(feats, dim=1)
    similarity = feats[1:] @ feats[0]
    top = similarity.topk(min(int(k), len(similarity)))
    names, labels = bank.label_names, bank.labels
    gallery = [
        (
            bank.pixels[i].permute(1, 2, 0).numpy(),
            f"{names[int(labels[i])] if names and labels is not None else ''} (cos {s:.3f})",
        )
        for s, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    prediction = _prediction(model, normalize(query.float() / 255)) if has_head else NO_HEAD
    return gallery, prediction


def _prediction(model, pixels: torch.Tensor) -> str:
    """The head's top classes with their probabilities, as `name: p, ...`."""
    with torch.no_grad():
        probs = model(pixels).logits.softmax(-1)[0]
    best = probs.topk(min(TOP_PREDICTIONS, len(probs)))
    return ", ".join(
        f"{model.config.id2label[int(i)]}: {p:.2f}" for p, i in zip(best.values.tolist(), best.indices.tolist())
    )
