"""SimCLR pretraining throughput: hfssl's pipeline vs lightly's, side by side in one process.

Both train the same model class (hfssl SimCLRModel, ResNet-18 with a CIFAR stem by default, projection
head 512-128) with AdamW on the same CIFAR-10 images (../shared/data/cifar10/train.parquet; the built-in
digits if absent), batch of B images = 2B views, fp32:

- hfssl: images decoded once into a uint8 tensor, batches augmented on the training device with
  per-image random parameters (kornia), hfssl NTXentLoss, and the model in channels-last layout as
  `scripts/pretrain.py --objective contrastive` runs it;
- lightly 1.6 (the peer, as its SimCLR example runs it): a Dataset handing out PIL images (from the same
  in-memory uint8 arrays, as torchvision's CIFAR10 does), lightly's `SimCLRTransform(input_size=32,
  gaussian_blur=0, cj_strength=0.5)` per image in a DataLoader, lightly's `NTXentLoss`. The peer is timed
  with 0 and with 2 DataLoader workers and its faster setting is the baseline.

Timed rounds alternate between the pipelines; medians are reported. A second table isolates the
augmentation alone (views per second, no model). Writes benchmarks/results/bench_contrastive.json
rows {"name", "ratio", "target", ...}, ratio = hfssl / lightly.

    pip install lightly==1.6.0   # benchmark-only peer
    python benchmarks/bench_contrastive.py [--quick]
"""

import statistics
import time
from pathlib import Path

import torch
from common import DATA, argument_parser, result_path, save_json
from PIL import Image

from hfssl import SimCLRConfig, SimCLRModel
from hfssl.data.vision import SimCLRAugmentation, channel_stats, load_images
from hfssl.losses import NTXentLoss

CIFAR = DATA / "cifar10" / "train.parquet"
RESULTS = result_path("bench_contrastive")


class PILImages(torch.utils.data.Dataset):
    """uint8 arrays handed out as PIL images and transformed per access, like torchvision.datasets.CIFAR10."""

    def __init__(self, pixels: torch.Tensor, transform):
        self.arrays = pixels.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3)
        self.transform = transform

    def __len__(self):
        return len(self.arrays)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.arrays[i]))


def _cycle(loader):
    while True:
        yield from loader


def hfssl_step_fn(pixels, mean, std, batch, config):
    torch.manual_seed(0)
    model = SimCLRModel(config).train().to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    augment, loss_fn = SimCLRAugmentation(config.image_size, mean, std), NTXentLoss(0.5)
    order = _cycle(torch.utils.data.DataLoader(range(len(pixels)), batch_size=batch, shuffle=True, drop_last=True))

    def step():
        x = pixels[next(order)]
        v1, v2 = (augment(x).contiguous(memory_format=torch.channels_last) for _ in range(2))
        z = model(v1, v2, return_loss=False).projections
        loss_fn(*z.chunk(2)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def lightly_transform(mean, std, size):
    from lightly.transforms import SimCLRTransform

    return SimCLRTransform(
        input_size=size, gaussian_blur=0.0, cj_strength=0.5, min_scale=0.08, normalize={"mean": mean, "std": std}
    )


def lightly_step_fn(pixels, mean, std, batch, config, workers):
    from lightly.loss import NTXentLoss as LightlyNTXent

    torch.manual_seed(0)
    model = SimCLRModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = LightlyNTXent(temperature=0.5)
    loader = torch.utils.data.DataLoader(
        PILImages(pixels, lightly_transform(mean, std, config.image_size)),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    batches = _cycle(loader)

    def step():
        v1, v2 = next(batches)
        z = model(v1, v2, return_loss=False).projections
        loss_fn(*z.chunk(2)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def time_rounds(fns: dict, rounds: int, calls: int) -> dict:
    """Median seconds per call of each function; rounds alternate between them (one warm-up call each)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--images", type=int, default=2048, help="Images drawn from the data set.")
    parser.add_argument("--resnet_widths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def load_pixels(count: int):
    """(data set, `count` of its images drawn with seed 0)."""
    data = load_images(str(CIFAR) if CIFAR.is_file() else "digits", image_size=32)
    # a seeded random subset: the CIFAR-10 parquet is stored class by class
    return data, data.pixels[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:count]]


def augmentation_views_per_s(pixels, mean, std) -> tuple[float, float]:
    """Augmentation alone, views per second of (hfssl, lightly) on 256 images."""
    augment = SimCLRAugmentation(32, mean, std)
    transform = lightly_transform(mean, std, 32)
    images = [Image.fromarray(a) for a in pixels[:256].permute(0, 2, 3, 1).numpy()]
    aug = time_rounds(
        {"hfssl": lambda: augment(pixels[:256]), "lightly": lambda: [transform(i) for i in images]}, rounds=3, calls=2
    )
    return 256 / aug["hfssl"], 2 * 256 / aug["lightly"]  # lightly makes two views per call


def pretraining_images_per_s(pixels, mean, std, batch: int, config, rounds: int, calls: int) -> dict[str, float]:
    """Images per second of hfssl's training step and of lightly's with 0 and 2 DataLoader workers."""
    steps = {"hfssl": hfssl_step_fn(pixels, mean, std, batch, config)}
    for workers in (0, 2):
        steps[f"lightly_workers{workers}"] = lightly_step_fn(pixels, mean, std, batch, config, workers)
    seconds = time_rounds(steps, rounds, calls)
    return {name: batch / s for name, s in seconds.items()}


def result_rows(per_s: dict[str, float], aug_hfssl: float, aug_lightly: float) -> list[dict]:
    best_peer = max((k for k in per_s if k.startswith("lightly")), key=per_s.get)
    return [
        {
            "name": "pretrain_images_per_s",
            "ratio": per_s["hfssl"] / per_s[best_peer],
            "target": 1.5,
            "ours": per_s["hfssl"],
            "peer": per_s[best_peer],
            "peer_setting": best_peer,
            "unit": "images/s (2 views each), augment + forward + backward + AdamW",
        },
        {
            "name": "augmentation_views_per_s",
            "ratio": aug_hfssl / aug_lightly,
            "target": None,
            "ours": aug_hfssl,
            "peer": aug_lightly,
            "unit": "augmented views/s, no model",
        },
    ]


def print_table(rows: list[dict], per_s: dict[str, float]) -> None:
    print(f"{'metric':<28}{'hfssl':>10}{'lightly':>10}{'ratio':>8}{'target':>8}")
    for r in rows:
        target = f"{r['target']:.1f}" if r["target"] else "-"
        print(f"{r['name']:<28}{r['ours']:>10.1f}{r['peer']:>10.1f}{r['ratio']:>8.2f}{target:>8}")
    print("peer settings (images/s): " + ", ".join(f"{k}={v:.1f}" for k, v in per_s.items() if k != "hfssl"))


def main():
    args = parse_args()
    rounds, calls = (2, 1) if args.quick else (4, 2)

    data, pixels = load_pixels(args.images)
    mean, std = channel_stats(pixels)
    config = SimCLRConfig(resnet_widths=args.resnet_widths, projection_dims=[512, 128])
    print(
        f"{data.name}: {len(pixels)} images; ResNet widths {args.resnet_widths}; batch {args.batch_size} images;"
        f" {torch.get_num_threads()} threads"
    )
    aug_hfssl, aug_lightly = augmentation_views_per_s(pixels, mean, std)
    per_s = pretraining_images_per_s(pixels, mean, std, args.batch_size, config, rounds, calls)
    rows = result_rows(per_s, aug_hfssl, aug_lightly)
    print_table(rows, per_s)
    save_json(args.output, rows)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
