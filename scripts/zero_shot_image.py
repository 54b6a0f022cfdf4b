"""Zero-shot image classification with a dual encoder (hfssl's CLIP, or a transformers CLIP): class names in caption
templates -> text embeddings (computed once) -> the nearest class of each image.

    python scripts/zero_shot_image.py --model_name_or_path outputs/clip-digits --dataset digits \
        --templates cifar --output_file outputs/zero-shot-digits.json
    python scripts/zero_shot_image.py --model_name_or_path outputs/clip-cifar --dataset cifar10.parquet \
        --classes cat dog ship --no_ensemble     # 3-way, the first template only

Prints the accuracy, per class, and images per second; --help lists every flag.
"""

import sys

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.zero_shot_image import ZeroShotImageArguments, run_zero_shot_image
from hfssl.run.arguments import parse_cli
from hfssl.run.cli import run_cli


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        args = parse_cli(ZeroShotImageArguments, argv)
        result = run_zero_shot_image(args)
        print(
            f"zero-shot accuracy {result.accuracy:.4f} on {result.num_images} images, "
            f"{len(result.class_names)} classes, {result.num_templates} template(s); "
            f"{result.images_per_second:.0f} images/s"
        )
        print("per class: " + ", ".join(f"{name} {acc:.3f}" for name, acc in result.per_class_accuracy.items()))
        if args.output_file:
            print(f"results written to {args.output_file}")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
