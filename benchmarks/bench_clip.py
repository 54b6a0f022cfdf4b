"""CLIP training steps and zero-shot evaluation: hfssl against open_clip's loss and transformers' pipeline.

Step (image-caption pairs/s, forward + backward + AdamW): the same dual encoder (all-MiniLM-L6-v2 text tower, hfssl's
ResNet image tower with widths 32-64-128-256 at 32 px, projections to 256), the same CIFAR-10 images (digits without
../shared) with template captions, batch 128, in three arms interleaved round by round (each first in turn; the
median round is reported):
- open_clip: the towers and projections called directly, open_clip 3.3.0's `ClipLoss` on the normalised features;
- hfssl: `DualEncoderModel(..., return_loss=True)` (its `ImageTextContrastiveLoss`);
- hfssl locked: the text tower frozen and its caption features cached (`--lock_text_tower`), image side trained.
Goal: hfssl / open_clip >= 1.0, locked / unlocked >= 2.0. The text tower's share of an unlocked step is timed apart
(its forward and backward alone).

Zero-shot evaluation (images/s, 10 candidate labels): `hfssl.adapt.zero_shot_image.evaluate_zero_shot` (class
embeddings once, decoded images in batches) against `pipeline("zero-shot-image-classification")` on the same saved
model, given PIL images (it encodes the 10 label texts again for every image).

    python benchmarks/bench_clip.py [--quick]

Writes benchmarks/results/bench_clip.json. Needs `pip install -e ".[bench]"` (open_clip) and
`python -m hfssl.reference fetch` (MiniLM).
"""

import statistics
import tempfile
import time

import torch
from common import DATA, argument_parser, result_path, save_json
from real_models import reference
from torch.nn import functional as F

import hfssl  # noqa: F401
from hfssl import DualEncoderModel, SimCLRConfig
from hfssl.adapt.zero_shot_image import evaluate_zero_shot
from hfssl.data.caption_templates import CIFAR_TEMPLATES
from hfssl.data.image_text import draw_captions, template_captions
from hfssl.data.vision import Normalize, channel_stats, load_images
from hfssl.models.dual_encoder import build_dual_encoder

CIFAR = DATA / "cifar10" / "train.parquet"
RESULTS = result_path("bench_clip")
BATCH = 128
IMAGE = SimCLRConfig(image_size=32, resnet_layers=[2, 2, 2, 2], resnet_widths=[32, 64, 128, 256])


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="3 timed rounds and 64 evaluation images.")
    parser.add_argument("--rounds", type=int, default=8, help="Timed rounds of each arm (after one untimed).")
    return parser.parse_args(argv)


def dual_encoder() -> tuple[DualEncoderModel, object]:
    torch.manual_seed(0)
    return build_dual_encoder(str(reference("minilm")), image_config=IMAGE, projection_dim=256)


def batches(model, tokenizer, rounds: int):
    """(normalised pixels (B, 3, 32, 32), tokenized captions, caption ids) per round, and the caption strings."""
    images = load_images(str(CIFAR) if CIFAR.is_file() else "digits", image_size=32)
    data = template_captions(images, images.label_names or [], CIFAR_TEMPLATES)
    normalize = Normalize(*channel_stats(images.pixels[:5000]))
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(rounds + 1):
        index = torch.randint(len(images), (BATCH,), generator=generator)
        caption_ids = draw_captions(data.options[index], generator)
        encoded = tokenizer([data.captions[i] for i in caption_ids], padding=True, return_tensors="pt")
        out.append((normalize(images.pixels[index]), encoded, caption_ids))
    return out, data.captions, images, normalize


def open_clip_step(model, loss_fn, pixels, encoded) -> torch.Tensor:
    """The peer: the same towers and projections, open_clip's ClipLoss on their normalised features."""
    image = F.normalize(model.image_projection(model.image_tower_features(pixels)), dim=-1)
    text = F.normalize(model.text_projection(model.text_tower_features(**encoded)), dim=-1)
    return loss_fn(image, text, model.logit_scale_value())


def arm_loss(name: str, model, loss_fn, cache, pixels, encoded, caption_ids) -> torch.Tensor:
    """The scalar each arm backpropagates ("text tower": the text tower's output alone, to time its share)."""
    if name == "open_clip":
        return open_clip_step(model, loss_fn, pixels, encoded)
    if name == "hfssl":
        return model(pixel_values=pixels, **encoded, return_loss=True).loss
    if name == "hfssl locked":
        return model(pixel_values=pixels, text_tower_features=cache[caption_ids], return_loss=True).loss
    return model.text_tower_features(**encoded).sum()


def timed(step, optimizer) -> float:
    """Seconds of one forward + backward (+ optimizer step when given)."""
    start = time.perf_counter()
    step().backward()
    if optimizer is not None:
        optimizer.step()
    seconds = time.perf_counter() - start
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
    return seconds


def step_arms(model, tokenizer, rounds: int) -> dict:
    """Median seconds per step of each arm over interleaved rounds (round 0 untimed), and the text tower's share."""
    import open_clip

    rows, captions, images, normalize = batches(model, tokenizer, rounds)
    with torch.no_grad():  # what --lock_text_tower caches: each distinct caption's text tower output, once
        cache = torch.cat(
            [
                model.text_tower_features(**tokenizer(captions[i : i + 64], padding=True, return_tensors="pt"))
                for i in range(0, len(captions), 64)
            ]
        )
    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times: dict[str, list[float]] = {"open_clip": [], "hfssl": [], "hfssl locked": [], "text tower": []}
    names = list(times)
    for r, (pixels, encoded, caption_ids) in enumerate(rows):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # each arm first in turn
            seconds = timed(
                lambda name=name: arm_loss(name, model, loss_fn, cache, pixels, encoded, caption_ids),  # noqa: B023
                optimizer if name != "text tower" else None,
            )
            if r > 0:
                times[name].append(seconds)
    return {name: statistics.median(values) for name, values in times.items()}, images, normalize


def zero_shot_arms(model, tokenizer, images, normalize, count: int) -> dict:
    """Images/s of hfssl's evaluation and of transformers' pipeline on the same saved model and images."""
    from PIL import Image
    from transformers import ViTImageProcessor, pipeline

    names = images.label_names or []
    subset = images.subset(torch.arange(count))
    ours = evaluate_zero_shot(model, tokenizer, subset, normalize, names, ["a photo of a {}."])
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        mean, std = normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()
        ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=mean, image_std=std).save_pretrained(folder)
        classify = pipeline("zero-shot-image-classification", model=folder)
        pil = [Image.fromarray(p.permute(1, 2, 0).numpy()) for p in subset.pixels]
        start = time.perf_counter()
        answers = classify(pil, candidate_labels=names, hypothesis_template="a photo of a {}.")
        pipeline_seconds = time.perf_counter() - start
    agree = sum(a[0]["label"] == names[int(y)] for a, y in zip(answers, subset.labels)) / count
    return {
        "hfssl": ours.images_per_second,
        "pipeline": count / pipeline_seconds,
        "pipeline_accuracy": agree,
        "hfssl_accuracy": ours.accuracy,
        "hfssl_class_embedding_seconds": ours.class_embedding_seconds,
    }


def main() -> None:
    args = parse_args()
    torch.set_num_threads(2)
    model, tokenizer = dual_encoder()
    model.train()
    step, images, normalize = step_arms(model, tokenizer, 3 if args.quick else args.rounds)
    model.eval()
    zero_shot = zero_shot_arms(model, tokenizer, images, normalize, 64 if args.quick else 512)
    rows = [
        {
            "name": "step: hfssl vs open_clip ClipLoss (pairs/s ratio)",
            "ratio": step["open_clip"] / step["hfssl"],
            "target": 1.0,
        },
        {
            "name": "step: locked + cached text vs unlocked (pairs/s ratio)",
            "ratio": step["hfssl"] / step["hfssl locked"],
            "target": 2.0,
        },
        {
            "name": "zero-shot: hfssl vs pipeline (images/s ratio)",
            "ratio": zero_shot["hfssl"] / zero_shot["pipeline"],
            "target": 1.0,
        },
    ]
    for name, seconds in step.items():
        print(f"{name:>14}: {seconds:.3f} s per step of {BATCH} pairs ({BATCH / seconds:.0f} pairs/s)")
    print(f"text tower forward + backward: {step['text tower'] / step['hfssl']:.0%} of an unlocked step")
    print(f"zero-shot images/s: hfssl {zero_shot['hfssl']:.0f}, pipeline {zero_shot['pipeline']:.0f}")
    for row in rows:
        print(f"{row['name']}: {row['ratio']:.2f} (target >= {row['target']})")
    save_json(
        RESULTS if not args.quick else result_path("bench_clip", "quick"),
        {"rows": rows, "step_seconds": step, "zero_shot": zero_shot, "batch": BATCH},
    )


if __name__ == "__main__":
    main()
