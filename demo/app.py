"""hfssl playground: few-shot prompts with any causal LM, nearest neighbours with a SimCLR encoder, zero-shot image
classification, two causal LMs answering one prompt side by side (a base and a post-trained model), a head's attention
and the heads ranked by induction score.

    python demo/app.py [--models_root outputs] [--model gpt-stdlib] [--port 7860] [--allow_hub_models]

Models are folders under --models_root (picked from a list; nothing outside it is ever read, symlinks included)
or, with --allow_hub_models, Hub ids (`owner/name`) that name no local path; the last --max_cached_models loaded
models stay in memory. Scoring uses the same `PromptClassifier` as scripts/prompt_eval.py (lm-evaluation-harness
log-likelihoods, contextual calibration). Errors are shown in the page (gr.Error) without the server's paths, never
as tracebacks.

This file is the page's layout and command line only: the model store, the handlers and the presets live in
`hfssl.serving` (no gradio there), fed one `PromptForm` built from the page's fields in `_form_handler`.
"""

import functools
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

import hfssl  # noqa: F401  (registers the hfssl models)
from hfssl.run.arguments import parse_cli, require_positive
from hfssl.run.cli import run_cli
from hfssl.run.errors import error_message
from hfssl.run.output import DEFAULT_OUTPUT_DIR
from hfssl.serving import (
    ENSEMBLE_CHOICES,
    EXAMPLES,
    FIRST_PRESET,
    MAX_NEW_TOKENS,
    ModelStore,
    Preset,
    PromptForm,
    answer_side_by_side,
    describe,
    generate,
    neighbours,
    preset,
    rank_labels,
    reason,
    score_labels,
)
from hfssl.serving.attention_handlers import MAX_ATTENTION_TOKENS, induction_ranking, show_attention
from hfssl.serving.prompt_form import DEFAULT_COT_TRIGGER, DEFAULT_NEW_TOKENS
from hfssl.serving.vision_handlers import BUILTIN_REFERENCE

MAX_UPLOAD = "5mb"
CONCURRENCY = 2
REASON_NOTE = (
    "**Reason (chain of thought)** asks the model to write its reasoning before its answer, in the layout of "
    "`prompt_eval.py --chain_of_thought`: the trigger (blank: none) follows the output prefix in the query. The "
    "demonstration rows have no rationale column, so each is shown as a plain worked example whose chain is only "
    '"The answer is <label>." (after the trigger too). The chain is cut where the model starts another example and '
    "its answer is read by prompt_eval's rule, shown apart below it. Raise *Max new tokens* for a longer chain. "
    "Ticking **Chain of thought** makes **Generate** stream the same prompt's continuation, uncut."
)


# ---- errors in the page ---------------------------------------------------------------------------------------
def _friendly(fn, store: ModelStore):
    """Turn expected errors into messages shown in the page (the same kinds the scripts report in one line), with
    the server's paths hidden; unexpected ones (bugs) keep their traceback."""

    def page_error(err: Exception) -> gr.Error | None:
        message = error_message(err)
        return None if message is None else gr.Error(store.hide_paths(message or type(err).__name__))

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                yield from fn(*args)
            except Exception as err:
                if (shown := page_error(err)) is None:
                    raise
                raise shown from None
    else:

        @functools.wraps(fn)
        def wrapper(*args):
            try:
                return fn(*args)
            except Exception as err:
                if (shown := page_error(err)) is None:
                    raise
                raise shown from None

    return wrapper


def _form_handler(handler, store: ModelStore, names: list[str], *, stream: bool = False):
    """`handler(store, form)` fed the form built from the page's values of the `PromptForm` fields `names`."""
    if stream:

        def run(*values):
            yield from handler(store, PromptForm.from_values(names, values))
    else:

        def run(*values):
            return handler(store, PromptForm.from_values(names, values))

    return _friendly(run, store)


# ---- the few-shot tab -----------------------------------------------------------------------------------------
def _model_and_template_fields(choices: list[str], default_model: str | None, allow_hub_models: bool, first: Preset):
    """The model picker, its description, the preset picker and note, and the template's text fields."""
    with gr.Row():
        model = gr.Dropdown(
            choices,
            value=default_model,
            allow_custom_value=True,
            label="Model (a folder under the models root" + (" or a Hub id)" if allow_hub_models else ")"),
            elem_id="model",
        )
        info = gr.Markdown(elem_id="model-info")
    preset_box = gr.Dropdown(list(EXAMPLES), value=first.name, label="Preset", elem_id="preset")
    note = gr.Markdown(first.note, elem_id="preset-note")
    with gr.Row():
        instruction = gr.Textbox(label="Instruction", value="", elem_id="instruction")
        input_prefix = gr.Textbox(label="Input prefix", value=first.input_prefix, elem_id="input-prefix")
        output_prefix = gr.Textbox(label="Output prefix", value=first.output_prefix, elem_id="output-prefix")
        delimiter = gr.Textbox(
            label="Delimiter between demonstrations (\\n = newline)", value=first.delimiter, elem_id="delimiter"
        )
        labels = gr.Textbox(
            label="Labels (comma-separated; each is its own answer word)", value=first.labels, elem_id="labels"
        )
    form = {
        "model": model,
        "preset": preset_box,
        "instruction": instruction,
        "input_prefix": input_prefix,
        "output_prefix": output_prefix,
        "delimiter": delimiter,
        "labels": labels,
    }
    return form, info, note


def _chain_of_thought_fields(form: dict) -> None:
    """The chain-of-thought option, added to `form`: the checkbox, the trigger, and a note on the Reason button."""
    with gr.Row():
        form["chain_of_thought"] = gr.Checkbox(
            value=False, label="Chain of thought (Generate writes Reason's prompt)", elem_id="chain-of-thought"
        )
        form["cot_trigger"] = gr.Textbox(
            value=DEFAULT_COT_TRIGGER, label="Chain-of-thought trigger (optional)", elem_id="cot-trigger"
        )
    gr.Markdown(REASON_NOTE, elem_id="reason-note")


def _prompt_fields(choices: list[str], default_model: str | None, allow_hub_models: bool):
    """Every input of the few-shot tab, keyed by its `PromptForm` field; the model info, the preset note, the
    buttons (score, generate, reason)."""
    first = preset(FIRST_PRESET)
    form, info, note = _model_and_template_fields(choices, default_model, allow_hub_models, first)
    form["demonstrations"] = gr.Dataframe(
        headers=["input", "label"],
        value=first.demonstrations,
        column_count=(2, "fixed"),
        row_count=4,
        interactive=True,
        label="Demonstrations",
        elem_id="demos",
    )
    form["query"] = gr.Textbox(label="Query", value=first.query, elem_id="query")
    with gr.Row():
        score = gr.Button("Score labels", variant="primary", elem_id="score")
        generate_button = gr.Button("Generate", elem_id="generate")
        reason_button = gr.Button("Reason (chain of thought)", elem_id="reason")
        form["max_new_tokens"] = gr.Slider(1, MAX_NEW_TOKENS, value=DEFAULT_NEW_TOKENS, step=1, label="Max new tokens")
        form["temperature"] = gr.Slider(0, 2, value=0, step=0.05, label="Temperature (0: greedy)")
        form["chat"] = gr.Checkbox(
            value=False, label="Chat template (instruct models: the prompt is one user turn)", elem_id="chat"
        )
    _chain_of_thought_fields(form)
    return form, info, note, (score, generate_button, reason_button)


def _prompt_outputs():
    """The few-shot tab's results: the chart and table of probabilities, the token count, the prompt, the text;
    the chain of thought and, apart, the answer read from it."""
    chart = gr.BarPlot(
        x="bar", y="probability", color="kind", label="Label probabilities", elem_id="chart", y_lim=[0, 1], sort=None
    )
    probabilities = gr.Dataframe(label="Probabilities", elem_id="probabilities")
    tokens = gr.Markdown(elem_id="tokens")
    prompt = gr.Textbox(label="Exact prompt", lines=8, elem_id="prompt")
    continuation = gr.Textbox(label="Generated continuation", elem_id="continuation")
    chain = gr.Textbox(label="Chain of thought (cut where the model starts another example)", lines=4, elem_id="chain")
    answer = gr.Markdown(elem_id="cot-answer")
    return [chart, probabilities, prompt, tokens], continuation, [chain, answer]


def _score_and_table(store: ModelStore, form: PromptForm):
    """The scores for the chart, the same rounded for the table, the prompt and its token count."""
    table, prompt, tokens = score_labels(store, form)
    return table, table[["label", "kind", "probability"]].round(4), prompt, tokens


def _preset_values(name: str) -> list:
    """A preset's values for the fields it fills, then its note (the outputs of the preset picker)."""
    chosen = preset(name)
    return [getattr(chosen, field_name) for field_name in Preset.filled_fields()] + [chosen.note]


def _prompt_tab(store: ModelStore, choices: list[str], default_model: str | None, allow_hub_models: bool):
    """Lay out and wire the few-shot tab; returns the model picker and its description (filled on page load)."""
    form, info, note, (score, generate_button, reason_button) = _prompt_fields(choices, default_model, allow_hub_models)
    score_outputs, continuation, reason_outputs = _prompt_outputs()
    filled = [form[name] for name in Preset.filled_fields()]
    form["preset"].change(_friendly(_preset_values, store), form["preset"], [*filled, note], api_name="preset")
    form["model"].change(_friendly(lambda name: describe(store, name), store), form["model"], info, api_name="describe")
    scoring, generating = PromptForm.field_names(generation=False), PromptForm.field_names()
    score.click(
        _form_handler(_score_and_table, store, scoring),
        [form[name] for name in scoring],
        score_outputs,
        api_name="score",
        concurrency_limit=CONCURRENCY,
    )
    generate_button.click(
        _form_handler(generate, store, generating, stream=True),
        [form[name] for name in generating],
        continuation,
        api_name="generate",
        concurrency_limit=CONCURRENCY,
    )
    reason_button.click(
        _form_handler(reason, store, generating),
        [form[name] for name in generating],
        reason_outputs,
        api_name="reason",
        concurrency_limit=CONCURRENCY,
    )
    return form["model"], info


# ---- the vision tab -------------------------------------------------------------------------------------------
def _vision_tab(store: ModelStore, encoders: list[str]) -> None:
    """Lay out and wire the vision tab: an encoder, an upload, its nearest reference images."""
    encoder = gr.Dropdown(encoders, value=None, allow_custom_value=True, label="SimCLR encoder")
    reference = gr.Textbox(
        value=BUILTIN_REFERENCE, label="Reference images (digits, or a data set under the models root)"
    )
    image = gr.Image(label="Image", type="numpy")
    topk = gr.Slider(1, 16, value=5, step=1, label="Neighbours")
    find = gr.Button("Find neighbours")
    gallery = gr.Gallery(label="Nearest reference images", columns=5)
    predicted = gr.Markdown()
    find.click(
        _friendly(lambda name, img, ref, k: neighbours(store, name, img, ref, k), store),
        [encoder, image, reference, topk],
        [gallery, predicted],
        api_name="neighbours",
        concurrency_limit=CONCURRENCY,
    )


# ---- the zero-shot image tab ---------------------------------------------------------------------------------
def _zero_shot_tab(store: ModelStore, dual_encoders: list[str]) -> None:
    """Lay out and wire the zero-shot tab: a dual encoder (CLIP), an upload, labels typed in, ranked probabilities."""
    model = gr.Dropdown(dual_encoders, value=None, allow_custom_value=True, label="Dual encoder (CLIP)")
    image = gr.Image(label="Image", type="numpy")
    labels = gr.Textbox(value="cat, dog, ship", label="Candidate labels (comma-separated)")
    with gr.Row():
        template = gr.Textbox(value="a photo of a {}.", label="Caption template ({} is the label)")
        ensemble = gr.Dropdown(list(ENSEMBLE_CHOICES), value="one template", label="Prompt ensemble")
    classify = gr.Button("Classify", variant="primary")
    ranked = gr.Label(label="Probabilities")
    classify.click(
        _friendly(lambda *values: rank_labels(store, *values), store),
        [model, image, labels, template, ensemble],
        ranked,
        api_name="zero_shot",
        concurrency_limit=CONCURRENCY,
    )


# ---- the side-by-side tab ------------------------------------------------------------------------------------
COMPARE_EXAMPLE = "What is 347 + 586? Reply with the number only."


def _compare_tab(store: ModelStore, choices: list[str], default_model: str | None, allow_hub_models: bool) -> None:
    """Lay out and wire the side-by-side tab: one prompt, two causal LMs (a base model and a post-trained one, say)."""
    with gr.Row():
        first = gr.Dropdown(choices, value=default_model, allow_custom_value=allow_hub_models, label="Model A")
        second = gr.Dropdown(choices, value=None, allow_custom_value=allow_hub_models, label="Model B (e.g. tuned)")
    prompt = gr.Textbox(value=COMPARE_EXAMPLE, label="Prompt (asked in each model's chat template, if it has one)")
    with gr.Row():
        new_tokens = gr.Number(value=48, precision=0, minimum=1, maximum=MAX_NEW_TOKENS, label="Max new tokens")
        ask = gr.Button("Answer with both", variant="primary")
    with gr.Row():
        answer_a, answer_b = gr.Textbox(label="Model A answers"), gr.Textbox(label="Model B answers")
    ask.click(
        _friendly(lambda *values: answer_side_by_side(store, *values), store),
        [first, second, prompt, new_tokens],
        [answer_a, answer_b],
        api_name="side_by_side",
        concurrency_limit=CONCURRENCY,
    )


# ---- the attention tab ---------------------------------------------------------------------------------------
ATTENTION_EXAMPLE = "The cat sat on the mat. The dog ran to the park. The cat sat on the mat."


def _attention_tab(store: ModelStore, choices: list[str], default_model: str | None, allow_hub_models: bool) -> None:
    """Lay out and wire the attention tab: a head's attention on a prompt (token x token), the heads ranked by
    induction score."""
    model = gr.Dropdown(
        choices, value=default_model, allow_custom_value=allow_hub_models, label="Model", elem_id="attention-model"
    )
    prompt = gr.Textbox(
        value=ATTENTION_EXAMPLE, label=f"Prompt (at most {MAX_ATTENTION_TOKENS} tokens)", elem_id="attention-prompt"
    )
    with gr.Row():
        layer = gr.Number(value=1, precision=0, minimum=0, label="Layer (from 0)")
        head = gr.Number(value=0, precision=0, minimum=0, label="Head (from 0)")
        show = gr.Button("Show attention", variant="primary", elem_id="show-attention")
        rank = gr.Button("Rank heads by induction score", elem_id="rank-heads")
    caption = gr.Markdown(elem_id="attention-caption")
    picture = gr.HTML(elem_id="attention-picture")
    ranking = gr.Dataframe(label="Top induction heads (prefix matching on repeated random tokens)", elem_id="ranking")
    show.click(
        _friendly(lambda *values: show_attention(store, *values), store),
        [model, prompt, layer, head],
        [picture, caption],
        api_name="attention",
        concurrency_limit=CONCURRENCY,
    )
    rank.click(
        _friendly(lambda name: induction_ranking(store, name), store),
        model,
        ranking,
        api_name="induction_heads",
        concurrency_limit=CONCURRENCY,
    )


# ---- the page -------------------------------------------------------------------------------------------------
def _default_model(choices: list[str], default_model: str | None) -> str | None:
    """The model to preselect: the one asked for, else the one the README's main command saves, else the first."""
    if default_model is not None or not choices:
        return default_model
    main_model = Path(DEFAULT_OUTPUT_DIR).name
    return main_model if main_model in choices else choices[0]


def build_app(
    models_root: str | Path = "outputs",
    default_model: str | None = None,
    *,
    allow_hub_models: bool = False,
    max_cached_models: int = 2,
) -> gr.Blocks:
    """The page: a few-shot prompt tab over the causal LMs under `models_root`, a vision tab over its encoders, a
    zero-shot tab over its dual encoders, a side-by-side tab over its causal LMs, an attention tab."""
    store = ModelStore(models_root, allow_hub_models=allow_hub_models, max_cached=max_cached_models)
    choices, encoders = store.local_models("causal_lm"), store.local_models("vision")
    dual_encoders = store.local_models("image_text")
    with gr.Blocks(title="hfssl playground") as app:
        gr.Markdown(
            "# hfssl playground\nFew-shot prompting with any causal LM; nearest neighbours with a SimCLR encoder; "
            "zero-shot image classification with a CLIP dual encoder; two models answering one prompt side by side; "
            "attention heads and induction scores."
        )
        with gr.Tab("Few-shot prompts"):
            model, info = _prompt_tab(store, choices, _default_model(choices, default_model), allow_hub_models)
        with gr.Tab("Vision encoder"):
            _vision_tab(store, encoders)
        with gr.Tab("Zero-shot image"):
            _zero_shot_tab(store, dual_encoders)
        with gr.Tab("Side by side"):
            _compare_tab(store, choices, _default_model(choices, default_model), allow_hub_models)
        with gr.Tab("Attention heads"):
            _attention_tab(store, choices, _default_model(choices, default_model), allow_hub_models)
        app.load(_friendly(lambda name: describe(store, name) if name else "", store), model, info)
    app.queue(default_concurrency_limit=CONCURRENCY)
    return app


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
