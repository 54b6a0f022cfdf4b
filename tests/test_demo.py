"""demo/app.py: its functions directly, gradio_client round trips, and a real headless-Chromium click."""

import importlib.util
import os
import shutil
import socket

import pytest
import torch

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra: pip install -e '.[demo]'")

from hfssl import GPTForCausalLM, reference  # noqa: E402
from hfssl.models.helpers import cache_dir  # noqa: E402
from tests.conftest import REPO, tiny_gpt_config  # noqa: E402

spec = importlib.util.spec_from_file_location("hfssl_demo_app", REPO / "demo" / "app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)

# read before the autouse fixture below points HFSSL_CACHE at an empty folder
REAL_CACHE = cache_dir("reference").parent
REAL_SMOLLM2 = reference.reference_model_path("smollm2")

FIELDS = [
    "sentiment",
    "",
    "Review: ",
    "Sentiment:",
    "\\n\\n",
    "negative, positive",
    [["a fine film", "positive"], ["a dull film", "negative"]],
    "a good film",
]


@pytest.fixture(autouse=True)
def _no_reference_models(tmp_path, monkeypatch):
    """The page lists fetched reference models too: these tests run against an empty hfssl cache."""
    monkeypatch.setenv("HFSSL_CACHE", str(tmp_path / "hfssl-cache"))


@pytest.fixture
def models_root(tmp_path, tiny_tokenizer):
    root = tmp_path / "models"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=256)).save_pretrained(
        root / "gpt"
    )
    tiny_tokenizer.save_pretrained(root / "gpt")
    (tmp_path / "secret").mkdir()
    return root


def test_store_lists_resolves_caches_and_refuses_outside_paths(models_root):
    store = app.ModelStore(models_root)
    assert store.local_models() == store.local_models("causal_lm") == ["gpt"]
    assert store.resolve("gpt") == str(models_root / "gpt")
    assert store.causal_lm("gpt") is store.causal_lm("gpt")  # cached
    for bad in ["../secret", "/etc", "gpt/../../secret", "~/x"]:
        with pytest.raises(ValueError, match="not a model under the models root"):
            store.resolve(bad)
    with pytest.raises(ValueError, match="Hub models are off"):
        store.resolve("someone/model")
    assert "parameters, context 256 tokens" in app.describe(store, "gpt")


def test_hub_ids_only_when_allowed_online_and_naming_no_local_path(models_root, monkeypatch):
    store = app.ModelStore(models_root, allow_hub_models=True)
    with pytest.raises(ValueError, match="offline"):  # the suite runs with HF_HUB_OFFLINE=1
        store.resolve("someone/model")
    monkeypatch.setattr(app, "_offline", lambda: False)
    assert store.resolve("someone/model") == "someone/model"
    with pytest.raises(ValueError, match="not a model under the models root"):
        store.resolve("../secret")


def test_names_never_resolve_outside_the_root(models_root, tmp_path, monkeypatch):
    """`models/ok` used to load a model from the server's working directory, and a symlink out of the root was
    followed (with --models_root .)."""
    import shutil

    elsewhere = tmp_path / "cwd"
    shutil.copytree(models_root / "gpt", elsewhere / "models" / "ok")
    (models_root / "link").symlink_to(elsewhere / "models" / "ok", target_is_directory=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(app, "_offline", lambda: False)
    for store in (app.ModelStore(models_root), app.ModelStore(models_root, allow_hub_models=True)):
        for name in ("models/ok", "link", "link/"):
            with pytest.raises(ValueError, match="not a model under the models root"):
                store.resolve(name)


def test_load_errors_do_not_show_server_paths(models_root):
    broken = models_root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "hfssl_gpt", "vocab_size": ')
    with pytest.raises(OSError) as info:
        app.ModelStore(models_root).causal_lm("broken")
    assert "'broken'" in str(info.value) and str(models_root) not in str(info.value)


def test_model_cache_is_bounded(models_root, tiny_tokenizer):
    import shutil

    for name in ("gpt2", "gpt3"):
        shutil.copytree(models_root / "gpt", models_root / name)
    store = app.ModelStore(models_root, max_cached=2)
    first = store.causal_lm("gpt")
    store.causal_lm("gpt2")
    assert store.causal_lm("gpt") is first  # still cached, now the most recent
    store.causal_lm("gpt3")  # evicts gpt2, the least recently used
    assert len(store._cache) == 2 and ("lm", str(models_root / "gpt2")) not in store._cache


def test_score_labels_directly(models_root):
    store = app.ModelStore(models_root)
    table, prompt, tokens = app.score_labels(store, "gpt", *FIELDS)
    assert (
        prompt == "Review: a fine film\nSentiment: positive\n\nReview: a dull film\nSentiment: negative\n\n"
        "Review: a good film\nSentiment:"
    )
    assert "tokens of a 256-token context window" in tokens
    for kind in ("raw", "calibrated"):
        probs = table[table.kind == kind].probability
        assert len(probs) == 2 and probs.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", list(app.EXAMPLES))
def test_every_preset_fills_fields_that_score(models_root, name):
    """A preset's demonstrations use only its label words, and its prompt builds and scores as it stands."""
    input_prefix, output_prefix, delimiter, labels, rows, query, note = app.preset_fields(name)
    words = [w.strip() for w in labels.split(",")]
    assert {label for _, label in rows} <= set(words) and len(words) >= 2
    assert name.split("_")[0] in note.lower()  # the note of this preset, not another's
    store = app.ModelStore(models_root)
    table, prompt, _ = app.score_labels(
        store, "gpt", name, "", input_prefix, output_prefix, delimiter, labels, rows, query
    )
    assert prompt.startswith(input_prefix) and any(prompt.startswith(f"{input_prefix}{text}") for text, _ in rows)
    assert prompt.split(app.unescape(delimiter))[-1].startswith(f"{input_prefix}{query}")  # the query comes last
    assert sorted(table[table.kind == "raw"].label) == sorted(words)
    with pytest.raises(ValueError, match="Unknown preset"):
        app.preset_fields("nope")


def test_delimiter_field_is_unescaped(models_root):
    store = app.ModelStore(models_root)
    fields = list(FIELDS)
    fields[4] = " | "
    _, prompt, _ = app.score_labels(store, "gpt", *fields)
    assert prompt.startswith("Review: a fine film\nSentiment: positive | Review: a dull film")


def test_vision_neighbours_and_prediction(models_root, simclr_dir, tmp_path):
    import shutil

    import numpy as np

    shutil.copytree(simclr_dir, models_root / "simclr")
    store = app.ModelStore(models_root)
    assert store.local_models("vision") == ["simclr"] and store.local_models("causal_lm") == ["gpt"]
    image = np.zeros((20, 20, 3), dtype=np.uint8)
    image[5:15, 8:12] = 255  # a bar, like a digit one
    gallery, prediction = app.neighbours(store, "simclr", image, "digits", k=3)
    assert len(gallery) == 3 and all(isinstance(caption, str) and "cos" in caption for _, caption in gallery)
    sims = [float(caption.split("cos ")[1].rstrip(")")) for _, caption in gallery]
    assert sims == sorted(sims, reverse=True) and all(-1 <= v <= 1 for v in sims)
    assert prediction == "this encoder has no classification head"
    with pytest.raises(ValueError, match="Upload an image"):
        app.neighbours(store, "simclr", None, "digits")

    from transformers import AutoModelForImageClassification

    classifier = AutoModelForImageClassification.from_pretrained(
        simclr_dir, num_labels=3, id2label={0: "zero", 1: "one", 2: "two"}
    )
    classifier.save_pretrained(models_root / "classifier")
    shutil.copy(simclr_dir / "preprocessor_config.json", models_root / "classifier")
    _, prediction = app.neighbours(store, "classifier", image, "digits", k=2)
    probabilities = dict(part.split(": ") for part in prediction.split(", "))
    assert set(probabilities) == {"zero", "one", "two"}
    assert sum(float(p) for p in probabilities.values()) == pytest.approx(1.0, abs=0.02)


def test_app_offers_language_models_to_the_prompt_tab_and_encoders_to_the_vision_tab(models_root, simclr_dir):
    import shutil

    shutil.copytree(simclr_dir, models_root / "a_simclr")  # sorts before "gpt": must not become the LM default
    (models_root / "broken").mkdir()
    (models_root / "broken" / "config.json").write_text("{not json")
    demo = app.build_app(models_root)
    dropdowns = {
        block.elem_id or block.label: block for block in demo.blocks.values() if isinstance(block, gr.Dropdown)
    }
    model, encoder = dropdowns["model"], dropdowns["SimCLR encoder"]
    assert model.value == "gpt" and [value for _, value in model.choices] == ["gpt"]
    assert [value for _, value in encoder.choices] == ["a_simclr"]


def test_generate_streams(models_root):
    store = app.ModelStore(models_root)
    pieces = list(app.generate(store, "gpt", *FIELDS, 5, 0.0))
    assert pieces and all(pieces[i].startswith(pieces[i - 1]) for i in range(1, len(pieces)))


def test_bad_input_messages(models_root):
    store = app.ModelStore(models_root)
    with pytest.raises(ValueError, match="not one of the labels"):
        app.score_labels(store, "gpt", *FIELDS[:6], [["a film", "neutral"]], "x")
    with pytest.raises(ValueError, match="at least two"):
        app.score_labels(store, "gpt", *FIELDS[:5], "positive", FIELDS[6], "x")
    with pytest.raises(ValueError, match="Type a query"):
        app.score_labels(store, "gpt", *FIELDS[:7], "  ")
    wrapped = app._friendly(lambda: app.score_labels(store, "../secret", *FIELDS), store)
    with pytest.raises(gr.Error):
        wrapped()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(models_root):
    demo = app.build_app(models_root, "gpt")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.mark.slow
def test_gradio_client_round_trips(running_app):
    from gradio_client import Client

    client = Client(running_app, verbose=False)
    _, table, prompt, tokens = client.predict(*_client_fields(), api_name="/score")
    assert prompt.endswith("Review: a good film\nSentiment:") and "tokens" in tokens
    values = [row[2] for row in table["data"]]
    assert len(values) == 4 and sum(values) == pytest.approx(2.0)
    text = client.predict(*_client_fields(), 4, 0.0, api_name="/generate")
    assert isinstance(text, str)
    with pytest.raises(Exception, match="not a model under the models root"):
        client.predict("../secret", *_client_fields()[1:], api_name="/score")
    *_, query, note = client.predict("key_value", api_name="/preset")
    assert query == "w" and note == app.PRESET_NOTES["key_value"]


def _client_fields():
    rows = FIELDS[6]
    return ["gpt", *FIELDS[:6], {"headers": ["input", "label"], "data": rows}, FIELDS[7]]


needs_chromium = pytest.mark.skipif(
    not shutil.which("chromium") or not shutil.which("chromedriver"),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by selenium; HFSSL_SCREENSHOT=path saves the page at the end of a test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,2400",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
        driver.save_screenshot(os.environ.get("HFSSL_SCREENSHOT") or str(tmp_path / "demo.png"))
    finally:
        driver.quit()


@pytest.mark.slow
@needs_chromium
def test_browser_scores_a_prompt(running_app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(running_app)
    wait = WebDriverWait(browser, 60)
    query = wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#query textarea")))
    # the page opens on the preset the default model answers from its context
    assert "copy from its context" in browser.find_element(By.ID, "preset-note").text
    query.clear()
    query.send_keys("e")
    browser.find_element(By.ID, "score").click()
    prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea")
    wait.until(lambda d: prompt.get_attribute("value").endswith("q red\nr pink\ne"))
    wait.until(lambda d: "calibrated" in d.find_element(By.ID, "probabilities").text)
    text = browser.find_element(By.ID, "probabilities").text
    assert all(word in text for word in ("red", "blue", "gold", "pink")) and "raw" in text


def _probability_rows(driver) -> list[tuple[str, str, float]]:
    """(label, kind, probability) for each row of the page's probability table, read from its text (gradio renders
    the table's cells as a virtual list: the text is one cell per line, the header first)."""
    from selenium.webdriver.common.by import By

    lines = driver.find_element(By.ID, "probabilities").text.split("\n")
    cells = lines[lines.index("probability") + 1 :]
    return [(cells[i], cells[i + 1], float(cells[i + 2])) for i in range(0, len(cells) - 2, 3)]


@pytest.mark.slow
@needs_chromium
def test_browser_scores_the_sentiment_preset_on_smollm2(models_root, browser, monkeypatch):
    """A real instruct model, picked from the page's list of fetched reference models, with the sentiment preset's
    demonstrations and the chat template on: on an unambiguous review the right label wins, raw and calibrated."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if REAL_SMOLLM2 is None:
        pytest.skip("SmolLM2 is not fetched: run python -m hfssl.reference fetch")
    monkeypatch.setenv("HFSSL_CACHE", str(REAL_CACHE))
    name = "reference/" + REAL_SMOLLM2.name
    demo = app.build_app(models_root, name)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        preset = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#preset input"))
        preset.click()
        preset.send_keys(Keys.CONTROL, "a")
        preset.send_keys("sentiment", Keys.ENTER)
        wait.until(lambda d: "Sentiment" in d.find_element(By.ID, "preset-note").text)
        assert "SmolLM2" in browser.find_element(By.ID, "preset-note").text  # the note's numbers come from it
        browser.find_element(By.CSS_SELECTOR, "#chat input").click()
        query = browser.find_element(By.CSS_SELECTOR, "#query textarea")
        query.clear()
        query.send_keys("A wonderful, heartfelt film with brilliant performances; I loved every minute.")
        browser.find_element(By.ID, "score").click()
        wait.until(lambda d: "calibrated" in d.find_element(By.ID, "probabilities").text)
        prompt = browser.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value")
        assert "<|im_start|>assistant" in prompt  # the chat template wraps the k-shot prompt
        rows = _probability_rows(browser)
        assert len(rows) == 4, rows
        for kind in ("raw", "calibrated"):
            probs = {label: p for label, k, p in rows if k == kind}
            assert set(probs) == {"negative", "positive"}, rows
            assert probs["positive"] > probs["negative"], (kind, rows)
    finally:
        demo.close()
