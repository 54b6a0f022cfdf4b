"""Linear probe on cached features vs the naive probe that runs the frozen encoder every epoch.

Same frozen encoder (hfssl SimCLR, ResNet-18 CIFAR stem, random init: speed does not depend on the
weights), same images (CIFAR-10 from ../shared/data, else the built-in digits), same head, same SGD
(mini-batches of 64, 20 epochs, one seed, the same shuffles): the only difference is where the features
come from. hfssl extracts them once (`hfssl.adapt.features`, batched, no grad) and trains on the cache;
the naive loop (the usual "freeze the backbone, train a linear layer" code) recomputes them for every
mini-batch of every epoch. Both accuracies are reported: they agree up to float noise from batch
composition in the encoder's kernels.

Writes benchmarks/results/bench_probe.json rows {"name", "ratio", "target"}; ratio = naive time / cached time.

    python benchmarks/bench_probe.py [--quick]
"""

import time
from pathlib import Path

import torch
from common import DATA, argument_parser, result_path, save_json
from torch import nn
from torch.nn import functional as F

from hfssl import SimCLRConfig, SimCLRModel
from hfssl.adapt.features import image_features
from hfssl.data.vision import Normalize, channel_stats, load_images

CIFAR = DATA / "cifar10" / "train.parquet"
RESULTS = result_path("bench_probe")


def sgd_probe(features_of, labels: torch.Tensor, dim: int, classes: int, epochs: int, seed: int) -> nn.Linear:
    """The probe both variants run: features_of(index) -> (b, dim) features of those training examples."""
    torch.manual_seed(seed)
    head = nn.Linear(dim, classes)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for index in torch.randperm(len(labels), generator=generator).split(64):
            loss = F.cross_entropy(head(features_of(index)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--quick", action="store_true", help="512 training images instead of 2048.")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def accuracy(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (head(features).argmax(1) == labels).float().mean().item()


def main():
    args = parse_args()
    n_train = 512 if args.quick else 2048

    data = load_images(str(CIFAR) if CIFAR.is_file() else "digits", image_size=32)
    # a seeded random subset: the CIFAR-10 parquet is stored class by class
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    train, test = data.subset(order[:n_train]), data.subset(order[n_train : n_train + 1000])
    mean, std = channel_stats(train.pixels)
    normalize = Normalize(mean, std)
    torch.manual_seed(0)
    encoder = SimCLRModel(SimCLRConfig()).eval()
    classes, dim = len(data.label_names), encoder.config.hidden_size
    test_features = image_features(encoder, test.pixels, normalize)
    print(f"{data.name}: {n_train} training images, {len(test)} test images, {args.epochs} epochs")

    start = time.perf_counter()
    cache = image_features(encoder, train.pixels, normalize)  # once
    cached_head = sgd_probe(lambda index: cache[index], train.labels, dim, classes, args.epochs, seed=0)
    cached_s = time.perf_counter() - start

    @torch.no_grad()
    def forward(index):
        return image_features(encoder, train.pixels[index], normalize)

    start = time.perf_counter()
    naive_head = sgd_probe(forward, train.labels, dim, classes, args.epochs, seed=0)
    naive_s = time.perf_counter() - start

    acc_cached = accuracy(cached_head, test_features, test.labels)
    acc_naive = accuracy(naive_head, test_features, test.labels)
    rows = [
        {
            "name": "probe_training_time",
            "ratio": naive_s / cached_s,
            "target": 10.0,
            "cached_seconds": cached_s,
            "naive_seconds": naive_s,
            "accuracy_cached": acc_cached,
            "accuracy_naive": acc_naive,
        }
    ]
    print(f"{'variant':<10}{'seconds':>10}{'test accuracy':>16}")
    print(f"{'cached':<10}{cached_s:>10.1f}{acc_cached:>16.4f}")
    print(f"{'naive':<10}{naive_s:>10.1f}{acc_naive:>16.4f}")
    print(f"speed-up {naive_s / cached_s:.1f}x (target >= 10)")
    save_json(args.output, rows)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
