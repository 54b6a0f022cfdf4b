"""Caption templates for image-text training and zero-shot classification: "a photo of a {}." with a class name in
the braces. Published prompt lists of the CLIP paper (Radford et al. 2021) and its repository (MIT licence):

- `CIFAR_TEMPLATES`: the 18 CLIP used for CIFAR-10 and CIFAR-100 (openai/CLIP, data/prompts.md);
- `OPENAI_IMAGENET_TEMPLATES`: the 80 of CLIP's ImageNet prompt ensemble (notebooks/Prompt_Engineering_for_ImageNet);
- `SIMPLE_IMAGENET_TEMPLATES`: the 7 of them that notebook found to do as well (open_clip's simple set).

`TEMPLATE_SETS` names them for the command line (`--templates cifar`), with "photo": "a photo of a {}." alone.
"""

from pathlib import Path

from ..run.errors import InputError

CIFAR_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)

OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

SIMPLE_IMAGENET_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.",),
    "cifar": CIFAR_TEMPLATES,
    "simple": SIMPLE_IMAGENET_TEMPLATES,
    "openai": OPENAI_IMAGENET_TEMPLATES,
}


def read_templates(spec: str) -> tuple[str, ...]:
    """The templates a user names: a set of `TEMPLATE_SETS`, or a text file with one template per line. InputError
    for an unknown name, a missing file, or a template without exactly one "{}" (where the class name goes)."""
    if spec in TEMPLATE_SETS:
        return TEMPLATE_SETS[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise InputError(
            f"--templates {spec!r} is neither a template set ({', '.join(TEMPLATE_SETS)}) nor a file of templates."
        )
    templates = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not templates:
        raise InputError(f"{path} holds no templates (one per line, each with {{}} where the class name goes).")
    for number, template in enumerate(templates, 1):
        check_template(template, f"{path}: template {number}")
    return templates


def check_template(template: str, where: str = "The template") -> str:
    """The template, if it has exactly one {} for the class name and no other braces; else InputError naming it."""
    try:
        ok = template.count("{}") == 1 and template.format("x") is not None
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{where} ({template!r}) needs exactly one {{}} for the class name and no other braces.")
    return template
