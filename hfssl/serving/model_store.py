"""Which saved models a server offers, name -> path resolution confined to its models folder, and loading them into
a bounded cache, with messages that never show the server's paths."""

import logging
import os
from pathlib import Path

from ..models.loading import load_causal_lm, load_pretrained
from ..reference import REFERENCE_MODELS, reference_model_path, reference_root
from ..run.confinement import check_confined, confined
from ..run.errors import InputError, StorageError
from ..run.model_source import GGUF_SUFFIX
from . import model_files
from .lru_cache import LRUCache

logger = logging.getLogger(__name__)

REFERENCE_PREFIX = "reference/"  # how a page names the models `python -m hfssl.reference fetch` fetched
MODELS_ROOT_SHOWN = "<models root>"
SERVER_SHOWN = "<server>"


class ModelStore:
    """Resolves model names to folders (or .gguf files) under `root`, to the fetched reference models
    (`reference/<name>`, see `hfssl.reference`) or, when allowed, to Hub ids, and keeps the last `max_cached` it
    loaded.

    Confinement: a local name resolves against its root only, after following symlinks (a link out of the root is
    refused); a Hub id is taken only with allow_hub_models, when it names no local path, and not offline. Messages
    never show the server's paths.
    """

    def __init__(self, root: str | Path, *, allow_hub_models: bool = False, max_cached: int = 2):
        self.root = Path(os.path.realpath(Path(root).expanduser()))
        self.reference_root = Path(os.path.realpath(reference_root()))
        self.allow_hub_models, self.max_cached = allow_hub_models, max(1, max_cached)
        self._cache = LRUCache(self.max_cached)

    # ---- messages ----------------------------------------------------------------------------------------------
    def hide_paths(self, message: str) -> str:
        """`message` with the server's folders replaced by what the page calls them."""
        for folder, shown in (
            (self.reference_root, REFERENCE_PREFIX.rstrip("/")),
            (self.root, MODELS_ROOT_SHOWN),
            (Path.cwd(), SERVER_SHOWN),
        ):
            message = message.replace(str(folder), shown)
        return message

    # ---- listing -----------------------------------------------------------------------------------------------
    def reference_models(self, kind: str | None = None) -> list[str]:
        """The fetched reference models a page can offer: SmolLM2 for the prompt tab (none takes images)."""
        if kind in ("vision", "image_text"):
            return []
        wanted = ["smollm2"] if kind == "causal_lm" else list(REFERENCE_MODELS)
        return [REFERENCE_PREFIX + REFERENCE_MODELS[k].folder for k in wanted if reference_model_path(k) is not None]

    def local_models(self, kind: str | None = None) -> list[str]:
        """Folders below the root holding a saved model (config.json), as paths relative to the root, then the
        fetched reference models.

        kind "causal_lm": only models whose config names a causal-LM architecture (`...ForCausalLM`,
        `...LMHeadModel`), and .gguf files; kind "vision": only folders saved with an image processor
        (preprocessor_config.json), which is what the vision tab loads; kind "image_text": image-text dual encoders
        (hfssl's CLIP, transformers' CLIP), what the zero-shot tab loads. None: every model.
        """
        if not self.root.is_dir():
            return []
        found = [str(folder.relative_to(self.root)) for folder in self._saved_folders(kind)]
        if kind in (None, "causal_lm"):  # llama.cpp checkpoints: causal LMs
            found += [str(p.relative_to(self.root)) for p in self.root.rglob(f"*{GGUF_SUFFIX}") if p.is_file()]
        return sorted(found) + self.reference_models(kind)

    def _saved_folders(self, kind: str | None) -> list[Path]:
        folders = []
        for config_file in self.root.rglob("config.json"):
            if "checkpoints" in config_file.parts:
                continue
            config = model_files.read_config(config_file) if kind else {}
            if config is None:
                continue
            if kind == "vision" and not model_files.is_vision_folder(config, config_file.parent):
                continue
            if kind == "causal_lm" and not model_files.is_causal_lm(config):
                continue
            if kind == "image_text" and not model_files.is_dual_encoder(config):
                continue
            folders.append(config_file.parent)
        return folders

    # ---- resolution --------------------------------------------------------------------------------------------
    def resolve(self, name: str | None) -> str:
        """The real path of a model folder inside the root, or an allowed Hub id; anything else is refused."""
        name = (name or "").strip()
        if not name:
            raise InputError("Choose a model first.")
        if "\x00" in name or "\\" in name:
            raise InputError(f"{name!r} is not a model name: use a folder under the models root.")
        root, relative = self.root, name
        if name.startswith(REFERENCE_PREFIX):
            root, relative = self.reference_root, name.removeprefix(REFERENCE_PREFIX)
        real = confined(root, relative)
        if real is not None and model_files.is_saved_model(real):
            if real.is_dir():  # its files too: a real folder of links to outside the root is refused
                check_confined(real, boundary=root, shown_as=repr(name))
            return str(real)
        local = (self.root / name).exists() or Path(name).expanduser().exists() or name.startswith((".", "/", "~"))
        hub_form = name.count("/") == 1 and ".." not in name and not local
        if not self.allow_hub_models or not hub_form:
            also = " or a Hub id (owner/name)" if self.allow_hub_models else " (Hub models are off: --allow_hub_models)"
            raise InputError(f"{name!r} is not a model under the models root{also}.")
        if model_files.hub_offline():
            raise InputError(f"{name!r} is a Hub id, but this server is offline (HF_HUB_OFFLINE): it cannot fetch it.")
        return name

    def data_path(self, name: str) -> str:
        """The real path of an existing file or folder of data under the root (symlinks followed); else refused."""
        path = confined(self.root, (name or "").strip())
        if path is None or not path.exists():
            raise InputError(f"Reference data {name!r} must be an existing path under the models root.")
        return str(path)

    # ---- loading -----------------------------------------------------------------------------------------------
    def causal_lm(self, name: str | None):
        """(model in eval mode, tokenizer) of a causal LM, loaded once while it stays among the cached."""

        def load():
            logger.info("Loading the causal LM %r", name)
            model, tokenizer = load_causal_lm(path)
            return model.eval(), tokenizer

        path = self.resolve(name)
        try:
            return self._cache.get(("lm", path), load)
        except (OSError, ValueError) as err:
            raise StorageError(f"Could not load {name!r} as a causal LM: {self.hide_paths(str(err))}") from None

    def encoder(self, name: str | None):
        """(model in eval mode, image processor, whether it has a trained classification head) of an image model."""
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

        def load():
            logger.info("Loading the image encoder %r", name)
            processor = AutoImageProcessor.from_pretrained(path)
            architectures = AutoConfig.from_pretrained(path).architectures or [""]
            has_head = "ForImageClassification" in architectures[0]  # a trained head, not a fresh one
            model = load_pretrained(AutoModelForImageClassification if has_head else AutoModel, path)
            return model.eval(), processor, has_head

        path = self.resolve(name)
        try:
            return self._cache.get(("vision", path), load)
        except (OSError, ValueError) as err:
            raise StorageError(f"Could not load an image encoder from {name!r}: {self.hide_paths(str(err))}") from None

    def dual_encoder(self, name: str | None):
        """(model in eval mode, tokenizer, image processor) of an image-text dual encoder."""
        from transformers import AutoImageProcessor, AutoModelForZeroShotImageClassification, AutoTokenizer

        def load():
            logger.info("Loading the dual encoder %r", name)
            model = load_pretrained(AutoModelForZeroShotImageClassification, path)
            return model.eval(), AutoTokenizer.from_pretrained(path), AutoImageProcessor.from_pretrained(path)

        path = self.resolve(name)
        try:
            return self._cache.get(("image_text", path), load)
        except (OSError, ValueError) as err:
            raise StorageError(f"Could not load a dual encoder from {name!r}: {self.hide_paths(str(err))}") from None
