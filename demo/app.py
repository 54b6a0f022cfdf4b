"""hfssl playground: few-shot prompts with any causal LM, nearest neighbours with a SimCLR encoder.

    python demo/app.py [--models_root outputs] [--model gpt-stdlib] [--port 7860] [--allow_hub_models]

Models are folders under --models_root (picked from a list; nothing outside it is ever read, symlinks included)
or, with --allow_hub_models, Hub ids (`owner/name`) that name no local path; the last --max_cached_models loaded
models stay in memory. Scoring uses the same `PromptClassifier` as scripts/prompt_eval.py (lm-evaluation-harness
log-likelihoods, contextual calibration). Errors are shown in the page (gr.Error) without the server's paths, never
as tracebacks.
"""

import json
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr
import torch

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.adapt.prompt_classifier import PromptClassifier, stop_token_ids
from hfssl.adapt.prompts import PRESETS, PromptTemplate
from hfssl.models.gguf import GGUF_SUFFIX
from hfssl.models.helpers import context_window, is_image_model
from hfssl.models.loading import load_causal_lm, load_pretrained
from hfssl.reference import REFERENCE_MODELS, reference_model_path, reference_root
from hfssl.run.arguments import parse_cli, require_positive
from hfssl.run.cli import run_cli
from hfssl.run.errors import error_message
from hfssl.training.causal_lm import DEFAULT_OUTPUT_DIR

REFERENCE_PREFIX = "reference/"  # how the page names the models `python -m hfssl.reference fetch` fetched
MAX_PROMPT_TOKENS = 2048
MAX_NEW_TOKENS = 128
MAX_UPLOAD = "5mb"
CONCURRENCY = 2

# preset -> (demonstrations, query); label words are the verbalizer (one per label)
EXAMPLES = {
    "sentiment": (
        [
            ["a gripping, beautifully acted film", "positive"],
            ["dull and far too long", "negative"],
            ["a warm and funny story", "positive"],
            ["the plot makes no sense", "negative"],
        ],
        "an honest, moving portrait",
    ),
    "question_type": (
        [
            ["How far is the moon from the earth?", "number"],
            ["Who wrote Hamlet?", "person"],
            ["Where is the Eiffel Tower?", "location"],
            ["What does NASA stand for?", "abbreviation"],
        ],
        "Who painted the Mona Lisa?",
    ),
    "topic": (
        [
            ["The central bank raised interest rates again.", "business"],
            ["The striker scored twice in the final.", "sports"],
            ["A new chip doubles battery life of phones.", "technology"],
            ["Leaders met to discuss the border treaty.", "world"],
        ],
        "Shares fell after the earnings report.",
    ),
    # the `key value` lines of hfssl.data.synthetic (the default run's in-context warm-up); the query's key
    # appears in the demonstrations, so a model that copies from its context answers "blue"
    "key_value": (
        [["q", "red"], ["w", "blue"], ["e", "gold"], ["r", "pink"], ["w", "blue"], ["q", "red"], ["r", "pink"]],
        "w",
    ),
}

# What each preset needs from a model, with what was measured (README: "Real models", "Learning check: does in-context
# learning emerge here?" and "Demo"). SmolLM2 numbers: scripts/prompt_eval.py on 200 held-out queries, 3 draws of 4
# demonstrations, mean over draws; raw / contextually calibrated.
_HERE = (
    "Models pretrained here for minutes answer it at chance (SST-2 k-shot: 0.48-0.49): their raw bars show a "
    "label bias."
)
PRESET_NOTES = {
    "sentiment": (
        "**Sentiment** needs a model that knows English. Measured on SmolLM2-135M-Instruct "
        "(`reference/SmolLM2-135M-Instruct`, 200 held-out SST-2 sentences): 0.79 at 0 shots, 0.76 raw / 0.81 "
        "calibrated with 4 demonstrations; with the chat template on, lower: 0.65 and 0.53 / 0.61. " + _HERE
    ),
    "question_type": (
        "**Question type** (TREC's 6 coarse classes, chance 0.17) needs a model that knows English. Measured on "
        "SmolLM2-135M-Instruct (200 held-out TREC questions): 0.29 raw / 0.38 calibrated at 0 shots, 0.43 / 0.48 "
        "with 4 demonstrations; with the chat template 0.40 / 0.35 and 0.34 / 0.32. " + _HERE
    ),
    "topic": (
        "**Topic** (AG News classes) needs a model that knows English and news; not measured here (no AG News copy "
        "offline). " + _HERE
    ),
    "key_value": (
        "**Key -> value**: the values are arbitrary, so only the demonstrations tell them: the model "
        "must copy from its context (induction). The README's default model (`gpt-stdlib`, trained with "
        "the in-context warm-up) is right 69% of the time with 4 demonstrations and 85% with 8 on "
        "held-out mappings (chance 12.5%; the query's key is among 8 random lines 90% of the time). "
        "Here every key of the query is in the demonstrations."
    ),
}
# the preset the page opens on: the one the default model answers from its context
FIRST_PRESET = "key_value"


def preset_fields(name: str) -> tuple[str, str, str, str, list, str, str]:
    """The fields a preset fills: input prefix, output prefix, escaped delimiter, label words, demonstrations,
    query, and the note on what the preset needs from a model."""
    if name not in EXAMPLES:
        raise ValueError(f"Unknown preset {name!r}; choose one of {', '.join(EXAMPLES)}.")
    template = PRESETS[name]
    rows, query = EXAMPLES[name]
    if template.verbalizer:
        words = sorted(set(template.verbalizer.values()))
    else:  # key -> value: the values of the demonstrations, in order of appearance
        words = list(dict.fromkeys(label for _, label in rows))
    return (
        template.input_prefix,
        template.output_prefix,
        escape(template.demo_delimiter),
        ", ".join(words),
        rows,
        query,
        PRESET_NOTES[name],
    )


def _read_config(config_file: Path) -> dict | None:
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None  # unreadable: not offered (loading it by name still reports the error)


def _is_causal_lm(config: dict) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


class ModelStore:
    """Resolves model names to folders (or .gguf files) under `root`, to the fetched reference models
    (`reference/<name>`, see `hfssl.reference`) or, when allowed, to Hub ids, and keeps the last few it loaded.

    Confinement: a local name resolves against its root only, after following symlinks (a link out of the root is
    refused); a Hub id is taken only with allow_hub_models, when it names no local path, and not offline. Messages
    never show the server's paths.
    """

    def __init__(self, root: str | Path, *, allow_hub_models: bool = False, max_cached: int = 2):
        self.root = Path(os.path.realpath(Path(root).expanduser()))
        self.reference_root = Path(os.path.realpath(reference_root()))
        self.allow_hub_models, self.max_cached = allow_hub_models, max(1, max_cached)
        self._cache: OrderedDict[tuple[str, str], tuple] = OrderedDict()
        self._lock = threading.Lock()

    def hide_paths(self, message: str) -> str:
        """`message` with the server's folders replaced by what the page calls them."""
        for folder, shown in (
            (self.reference_root, REFERENCE_PREFIX.rstrip("/")),
            (self.root, "<models root>"),
            (Path.cwd(), "<server>"),
        ):
            message = message.replace(str(folder), shown)
        return message

    def reference_models(self, kind: str | None = None) -> list[str]:
        """The fetched reference models the page can offer: SmolLM2 for the prompt tab (none is an image encoder)."""
        if kind == "vision":
            return []
        wanted = ["smollm2"] if kind == "causal_lm" else list(REFERENCE_MODELS)
        return [REFERENCE_PREFIX + REFERENCE_MODELS[k].folder for k in wanted if reference_model_path(k) is not None]

    def local_models(self, kind: str | None = None) -> list[str]:
        """Folders below the root holding a saved model (config.json), as paths relative to the root.

        kind "causal_lm": only models whose config names a causal-LM architecture (`...ForCausalLM`,
        `...LMHeadModel`); kind "vision": only folders saved with an image processor
        (preprocessor_config.json), which is what the vision tab loads. None: every model.
        """
        if not self.root.is_dir():
            return []
        found = []
        for config in self.root.rglob("config.json"):
            if "checkpoints" in config.parts:
                continue
            content = _read_config(config) if kind else {}
            if content is None:
                continue
            if kind == "vision" and not (
                is_image_model(content) and (config.parent / "preprocessor_config.json").is_file()
            ):
                continue
            if kind == "causal_lm" and not _is_causal_lm(content):
                continue
            found.append(str(config.parent.relative_to(self.root)))
        if kind in (None, "causal_lm"):  # llama.cpp checkpoints: causal LMs
            found += [str(p.relative_to(self.root)) for p in self.root.rglob(f"*{GGUF_SUFFIX}") if p.is_file()]
        return sorted(found) + self.reference_models(kind)

    def resolve(self, name: str) -> str:
        """The real path of a model folder inside the root, or an allowed Hub id; anything else is refused."""
        name = (name or "").strip()
        if not name:
            raise ValueError("Choose a model first.")
        if "\x00" in name or "\\" in name:
            raise ValueError(f"{name!r} is not a model name.")
        root, relative = self.root, name
        if name.startswith(REFERENCE_PREFIX):
            root, relative = self.reference_root, name.removeprefix(REFERENCE_PREFIX)
        real = Path(os.path.realpath(root / relative))  # an absolute name stays absolute: checked below
        if real.is_relative_to(root) and ((real / "config.json").is_file() or _is_gguf_file(real)):
            return str(real)
        local = (self.root / name).exists() or Path(name).expanduser().exists() or name.startswith((".", "/", "~"))
        hub_form = name.count("/") == 1 and ".." not in name and not local
        if not self.allow_hub_models or not hub_form:
            also = " or a Hub id (owner/name)" if self.allow_hub_models else " (Hub models are off: --allow_hub_models)"
            raise ValueError(f"{name!r} is not a model under the models root{also}.")
        if _offline():
            raise ValueError(f"{name!r} is a Hub id, but this server is offline (HF_HUB_OFFLINE): it cannot fetch it.")
        return name

    def _cached(self, key: tuple[str, str], load):
        """The cached value of `key`, else `load()`; the least recently used entry goes beyond max_cached."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            value = load()
            self._cache[key] = value
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
            return value

    def causal_lm(self, name: str):
        def load():
            model, tokenizer = load_causal_lm(path)
            return model.eval(), tokenizer

        path = self.resolve(name)
        try:
            return self._cached(("lm", path), load)
        except (OSError, ValueError) as err:
            raise OSError(f"Could not load {name!r} as a causal LM: {self.hide_paths(str(err))}") from None

    def encoder(self, name: str):
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

        def load():
            processor = AutoImageProcessor.from_pretrained(path)
            architectures = AutoConfig.from_pretrained(path).architectures or [""]
            has_head = "ForImageClassification" in architectures[0]  # a trained head, not a fresh one
            model = load_pretrained(AutoModelForImageClassification if has_head else AutoModel, path)
            return model.eval(), processor, has_head

        path = self.resolve(name)
        try:
            return self._cached(("vision", path), load)
        except (OSError, ValueError) as err:
            raise OSError(f"Could not load an image encoder from {name!r}: {self.hide_paths(str(err))}") from None


def _is_gguf_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == GGUF_SUFFIX


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(getattr(constants, "HF_HUB_OFFLINE", False)) or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
        "1",
        "true",
        "yes",
        "on",
    )


def describe(store: ModelStore, name: str) -> str:
    model, tokenizer = store.causal_lm(name)
    params = sum(p.numel() for p in model.parameters())
    window = context_window(model)
    return (
        f"**{name}** — {type(model).__name__}, {params:,} parameters, context {window or 'unlimited'} tokens, "
        f"tokenizer {type(tokenizer).__name__} ({len(tokenizer):,} tokens)"
    )


def unescape(text: str) -> str:
    r"""Delimiters are typed as escapes: a literal `\n` in the field is a newline."""
    return (text or "").replace("\\n", "\n").replace("\\t", "\t")


def escape(text: str) -> str:
    return text.replace("\n", "\\n").replace("\t", "\\t")


def build_template(
    preset: str, instruction: str, input_prefix: str, output_prefix: str, delimiter: str, labels: str
) -> tuple[PromptTemplate, list[str]]:
    """A template whose verbalizer is the comma-separated label words (each label is its own word);
    `delimiter` (escaped, e.g. `\n\n`) separates demonstrations."""
    words = [w.strip() for w in (labels or "").split(",") if w.strip()]
    if len(words) < 2:
        raise ValueError("List at least two comma-separated labels.")
    base = PRESETS.get(preset, PRESETS["sentiment"])
    template = PromptTemplate(
        verbalizer={w: w for w in words},
        instruction=instruction or "",
        input_prefix=input_prefix,
        field_delimiter=base.field_delimiter,
        output_prefix=output_prefix,
        target_delimiter=base.target_delimiter,
        demo_delimiter=unescape(delimiter) or base.demo_delimiter,
    )
    return template, words


def parse_demonstrations(rows, words: list[str]) -> tuple[list[str], list[int]]:
    """(texts, label ids) from the table rows [input, label]; blank rows are skipped."""
    texts, labels = [], []
    for row in rows or []:
        text, label = (list(row) + ["", ""])[:2]
        text, label = str(text or "").strip(), str(label or "").strip()
        if not text and not label:
            continue
        if label not in words:
            raise ValueError(f"Demonstration label {label!r} is not one of the labels {words}.")
        texts.append(text)
        labels.append(words.index(label))
    return texts, labels


def _rows(demos) -> list:
    """Gradio gives a table as a pandas DataFrame or a list of rows."""
    return demos.values.tolist() if hasattr(demos, "values") else list(demos or [])


def prepare(
    store, model_name, preset, instruction, input_prefix, output_prefix, delimiter, labels, demos, query, chat=False
):
    model, tokenizer = store.causal_lm(model_name)
    template, words = build_template(preset, instruction, input_prefix, output_prefix, delimiter, labels)
    texts, label_ids = parse_demonstrations(_rows(demos), words)
    if not str(query or "").strip():
        raise ValueError("Type a query.")
    classifier = PromptClassifier(model, tokenizer, template, words, batch_size=8, chat_template=bool(chat))
    demos_text = classifier.demonstrations(texts, label_ids)
    return classifier, template, demos_text, str(query).strip()


def prompt_info(classifier, template, demos_text, query) -> tuple[str, str]:
    """(the exact prompt, its token count against the context window)."""
    kept = classifier.fit_context(demos_text, [query])
    prompt = classifier.context(kept, query)  # with the chat template when it is on
    n = len(classifier.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if n > MAX_PROMPT_TOKENS:
        raise ValueError(f"The prompt has {n} tokens; this demo accepts at most {MAX_PROMPT_TOKENS}.")
    dropped = f" ({len(demos_text) - len(kept)} demonstrations dropped to fit)" if len(kept) < len(demos_text) else ""
    return prompt, f"{n} tokens of a {classifier.window or 'unlimited'}-token context window{dropped}"


def score_labels(
    store, model_name, preset, instruction, input_prefix, output_prefix, delimiter, labels, demos, query, chat=False
):
    """Per-label probabilities, raw and contextually calibrated, plus the prompt and its token count."""
    import pandas as pd

    classifier, template, demos_text, query = prepare(
        store, model_name, preset, instruction, input_prefix, output_prefix, delimiter, labels, demos, query, chat
    )
    prompt, tokens = prompt_info(classifier, template, demos_text, query)
    scores = classifier.score([query], [demos_text], calibrate=True)
    kinds = ["raw"] * len(classifier.options) + ["calibrated"] * len(classifier.options)
    table = pd.DataFrame(
        {
            "label": classifier.options * 2,
            "probability": scores.probs[0].tolist() + scores.calibrated[0].tolist(),
            "kind": kinds,
            "bar": [f"{w} ({k})" for w, k in zip(classifier.options * 2, kinds)],  # one bar each, not stacked
        }
    )
    return table, prompt, tokens


def generate(
    store,
    model_name,
    preset,
    instruction,
    input_prefix,
    output_prefix,
    delimiter,
    labels,
    demos,
    query,
    max_new_tokens,
    temperature,
    chat=False,
):
    """Stream the continuation of the prompt (greedy at temperature 0); with the chat template it stops at the end of
    the assistant's turn."""
    from transformers import TextIteratorStreamer

    classifier, template, demos_text, query = prepare(
        store, model_name, preset, instruction, input_prefix, output_prefix, delimiter, labels, demos, query, chat
    )
    prompt, _ = prompt_info(classifier, template, demos_text, query)
    model, tokenizer = classifier.model, classifier.tokenizer
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    room = (classifier.window or 10**9) - inputs["input_ids"].shape[1]
    new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS, room))
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    sampling = float(temperature) > 0
    kwargs = dict(
        **inputs,
        max_new_tokens=new_tokens,
        streamer=streamer,
        do_sample=sampling,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        eos_token_id=stop_token_ids(tokenizer),
    )
    if sampling:
        kwargs["temperature"] = float(temperature)
    thread = threading.Thread(target=model.generate, kwargs=kwargs, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()


def neighbours(store, encoder_name, image, reference: str, k: int = 5):
    """Top-k most similar reference images (cosine of encoder features) and the head's prediction if any."""
    import numpy as np

    from hfssl.adapt.features import image_features
    from hfssl.data.vision import Normalize, load_images

    if image is None:
        raise ValueError("Upload an image first.")
    model, processor, has_head = store.encoder(encoder_name)
    size = model.config.image_size
    normalize = Normalize(list(processor.image_mean), list(processor.image_std))
    bank = load_images(reference or "digits", image_size=size)
    from PIL import Image

    query = Image.fromarray(np.asarray(image)).convert("RGB").resize((size, size))
    query = torch.from_numpy(np.array(query)).permute(2, 0, 1)[None].contiguous()
    feats = image_features(model, torch.cat([query, bank.pixels[:2000]]), normalize)
    feats = torch.nn.functional.normalize(feats, dim=1)
    similarity = feats[1:] @ feats[0]
    top = similarity.topk(min(int(k), len(similarity)))
    gallery = [
        (
            bank.pixels[i].permute(1, 2, 0).numpy(),
            f"{bank.label_names[int(bank.labels[i])] if bank.label_names else ''} (cos {s:.3f})",
        )
        for s, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    prediction = "this encoder has no classification head"
    if has_head:
        with torch.no_grad():
            probs = model(normalize(query.float() / 255)).logits.softmax(-1)[0]
        best = probs.topk(min(3, len(probs)))
        prediction = ", ".join(
            f"{model.config.id2label[int(i)]}: {p:.2f}" for p, i in zip(best.values.tolist(), best.indices.tolist())
        )
    return gallery, prediction


def _friendly(fn, store: ModelStore):
    """Turn expected errors into messages shown in the page (the same kinds the scripts report in one line), with
    the server's paths hidden."""
    import functools
    import inspect

    def page_error(err: Exception) -> gr.Error:
        return gr.Error(store.hide_paths(error_message(err) or type(err).__name__))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                yield from fn(*args)
            except Exception as err:
                if error_message(err) is None:
                    raise
                raise page_error(err) from None
    else:

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except Exception as err:
                if error_message(err) is None:
                    raise
                raise page_error(err) from None

    return wrapper


def build_app(
    models_root: str | Path = "outputs",
    default_model: str | None = None,
    *,
    allow_hub_models: bool = False,
    max_cached_models: int = 2,
) -> gr.Blocks:
    store = ModelStore(models_root, allow_hub_models=allow_hub_models, max_cached=max_cached_models)
    choices, encoders = store.local_models("causal_lm"), store.local_models("vision")
    if default_model is None and choices:  # prefer the model the README's main command saves
        main_model = Path(DEFAULT_OUTPUT_DIR).name
        default_model = main_model if main_model in choices else choices[0]
    with gr.Blocks(title="hfssl playground") as app:
        gr.Markdown(
            "# hfssl playground\nFew-shot prompting with any causal LM; nearest neighbours with a SimCLR encoder."
        )
        with gr.Tab("Few-shot prompts"):
            with gr.Row():
                model_box = gr.Dropdown(
                    choices,
                    value=default_model,
                    allow_custom_value=True,
                    label="Model (a folder under the models root" + (" or a Hub id)" if allow_hub_models else ")"),
                    elem_id="model",
                )
                info = gr.Markdown(elem_id="model-info")
            first_prefix, first_output, first_delimiter, first_labels, first_rows, first_query, first_note = (
                preset_fields(FIRST_PRESET)
            )
            preset = gr.Dropdown(list(EXAMPLES), value=FIRST_PRESET, label="Preset", elem_id="preset")
            preset_note = gr.Markdown(first_note, elem_id="preset-note")
            with gr.Row():
                instruction = gr.Textbox(label="Instruction", value="", elem_id="instruction")
                input_prefix = gr.Textbox(label="Input prefix", value=first_prefix, elem_id="input-prefix")
                output_prefix = gr.Textbox(label="Output prefix", value=first_output, elem_id="output-prefix")
                delimiter = gr.Textbox(
                    label="Delimiter between demonstrations (\\n = newline)", value=first_delimiter, elem_id="delimiter"
                )
                labels = gr.Textbox(
                    label="Labels (comma-separated; each is its own answer word)", value=first_labels, elem_id="labels"
                )
            demos = gr.Dataframe(
                headers=["input", "label"],
                value=first_rows,
                column_count=(2, "fixed"),
                row_count=4,
                interactive=True,
                label="Demonstrations",
                elem_id="demos",
            )
            query = gr.Textbox(label="Query", value=first_query, elem_id="query")
            with gr.Row():
                score_button = gr.Button("Score labels", variant="primary", elem_id="score")
                generate_button = gr.Button("Generate", elem_id="generate")
                max_new = gr.Slider(1, MAX_NEW_TOKENS, value=20, step=1, label="Max new tokens")
                temperature = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0: greedy)")
                chat = gr.Checkbox(
                    value=False, label="Chat template (instruct models: the prompt is one user turn)", elem_id="chat"
                )
            chart = gr.BarPlot(
                x="bar",
                y="probability",
                color="kind",
                label="Label probabilities",
                elem_id="chart",
                y_lim=[0, 1],
                sort=None,
            )
            probabilities = gr.Dataframe(label="Probabilities", elem_id="probabilities")
            tokens = gr.Markdown(elem_id="tokens")
            prompt = gr.Textbox(label="Exact prompt", lines=8, elem_id="prompt")
            continuation = gr.Textbox(label="Generated continuation", elem_id="continuation")

            fields = [model_box, preset, instruction, input_prefix, output_prefix, delimiter, labels, demos, query]

            preset.change(
                _friendly(preset_fields, store),
                preset,
                [input_prefix, output_prefix, delimiter, labels, demos, query, preset_note],
                api_name="preset",
            )
            model_box.change(_friendly(lambda name: describe(store, name), store), model_box, info, api_name="describe")

            def on_score(*args):
                table, text, count = score_labels(store, *args)
                return table, table[["label", "kind", "probability"]].round(4), text, count

            score_button.click(
                _friendly(on_score, store),
                fields + [chat],
                [chart, probabilities, prompt, tokens],
                api_name="score",
                concurrency_limit=CONCURRENCY,
            )
            generate_button.click(
                _friendly(lambda *a: (yield from generate(store, *a)), store),
                fields + [max_new, temperature, chat],
                continuation,
                api_name="generate",
                concurrency_limit=CONCURRENCY,
            )
        with gr.Tab("Vision encoder"):
            encoder_box = gr.Dropdown(encoders, value=None, allow_custom_value=True, label="SimCLR encoder")
            reference = gr.Textbox(
                value="digits", label="Reference images (digits, or a data set under the models root)"
            )
            image = gr.Image(label="Image", type="numpy")
            topk = gr.Slider(1, 16, value=5, step=1, label="Neighbours")
            find = gr.Button("Find neighbours")
            gallery = gr.Gallery(label="Nearest reference images", columns=5)
            predicted = gr.Markdown()

            def on_find(name, img, ref, k):
                if ref and ref != "digits":
                    ref = _inside(store.root, ref)
                return neighbours(store, name, img, ref, k)

            find.click(
                _friendly(on_find, store),
                [encoder_box, image, reference, topk],
                [gallery, predicted],
                api_name="neighbours",
                concurrency_limit=CONCURRENCY,
            )
        app.load(_friendly(lambda name: describe(store, name) if name else "", store), model_box, info)
    app.queue(default_concurrency_limit=CONCURRENCY)
    return app


def _inside(root: Path, name: str) -> str:
    path = Path(os.path.realpath(root / name))
    if not path.is_relative_to(root) or not path.exists():
        raise ValueError(f"Reference data {name!r} must be an existing path under the models root.")
    return str(path)


@dataclass(kw_only=True)
class DemoArguments:
    models_root: str = field(default="outputs", metadata={"help": "The folder whose saved models the page offers."})
    model: str | None = field(default=None, metadata={"help": "Folder under --models_root or Hub id to preselect."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on."})
    port: int = field(default=7860, metadata={"help": "Port to serve on."})
    allow_hub_models: bool = field(
        default=False, metadata={"help": "Also load Hub ids (owner/name) that name no local path (needs the network)."}
    )
    max_cached_models: int = field(default=2, metadata={"help": "Loaded models kept in memory (least recent goes)."})

    def __post_init__(self):
        require_positive(self, "port", "max_cached_models")


def main(argv: list[str] | None = None) -> int:
    def run() -> None:
        args = parse_cli(DemoArguments, argv)
        app = build_app(
            args.models_root,
            args.model,
            allow_hub_models=args.allow_hub_models,
            max_cached_models=args.max_cached_models,
        )
        app.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD, show_error=True)

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
