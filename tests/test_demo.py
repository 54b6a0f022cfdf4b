"""demo/app.py, the page: its layout and wiring, expected errors shown in the page, gradio_client round trips, and a
real headless-Chromium click. The model store and the handlers it wires are tested without gradio in
tests/serving/."""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys

import pytest

gr = pytest.importorskip("gradio", reason="the demo needs the [demo] extra: pip install -e '.[demo]'")

from hfssl import reference  # noqa: E402
from hfssl.adapt.chain_of_thought import parse_cot_answer  # noqa: E402
from hfssl.models.helpers import cache_dir  # noqa: E402
from hfssl.run.errors import StorageError  # noqa: E402
from hfssl.serving import PRESET_NOTES, ModelStore, PromptForm, score_labels  # noqa: E402
from hfssl.serving.prompt_handlers import answer_markdown  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.serving.models_root import SENTIMENT_FORM  # noqa: E402

spec = importlib.util.spec_from_file_location("hfssl_demo_app", REPO / "demo" / "app.py")
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)

# read before the autouse fixture below points HFSSL_CACHE at an empty folder
REAL_CACHE = cache_dir("reference").parent
REAL_SMOLLM2 = reference.reference_model_path("smollm2")


@pytest.fixture(autouse=True)
def _no_reference_models(empty_hfssl_cache):
    """The page lists fetched reference models too: these tests see none (the SmolLM2 test restores the cache)."""


def test_app_offers_language_models_to_the_prompt_tab_and_encoders_to_the_vision_tab(
    models_root, simclr_dir, tmp_path, tiny_encoder_tokenizer
):
    from tests.models.test_modeling_clip import _saved

    shutil.copytree(simclr_dir, models_root / "a_simclr")  # sorts before "gpt": must not become the LM default
    shutil.copytree(_saved(tmp_path, tiny_encoder_tokenizer)[1], models_root / "clip")
    (models_root / "broken").mkdir()
    (models_root / "broken" / "config.json").write_text("{not json")
    demo = app.build_app(models_root)
    dropdowns = {
        block.elem_id or block.label: block for block in demo.blocks.values() if isinstance(block, gr.Dropdown)
    }
    model, encoder, dual = dropdowns["model"], dropdowns["SimCLR encoder"], dropdowns["Dual encoder (CLIP)"]
    assert model.value == "gpt" and [value for _, value in model.choices] == ["gpt"]
    assert [value for _, value in encoder.choices] == ["a_simclr"]
    assert [value for _, value in dual.choices] == ["clip"]


def test_expected_errors_are_page_errors_without_server_paths_and_bugs_keep_their_traceback(models_root):
    store = ModelStore(models_root)
    wrapped = app._friendly(lambda: score_labels(store, PromptForm(**{**SENTIMENT_FORM, "model": "../secret"})), store)
    with pytest.raises(gr.Error):
        wrapped()

    def broken_load():
        raise StorageError(f"cannot read {models_root / 'gpt' / 'config.json'}")
        yield

    with pytest.raises(gr.Error) as info:
        list(app._friendly(broken_load, store)())  # a streaming handler too
    assert str(models_root) not in str(info.value) and "<models root>" in str(info.value)
    with pytest.raises(KeyError):
        app._friendly(lambda: {}["bug"], store)()


def test_the_demo_imports_neither_datasets_nor_the_training_package():
    """`python demo/app.py --help` loads the page's code only: no `datasets`, no hfssl.training."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['demo/app.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('demo/app.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('datasets', 'hfssl.training') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--models_root" in out.stdout and out.stdout.strip().endswith("[]")


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
    chain, answer = client.predict(
        *_client_fields(), 8, 0.0, False, True, "Let's think step by step.", api_name="/reason"
    )
    assert isinstance(chain, str) and answer.startswith("Parsed answer:")
    assert answer == answer_markdown(parse_cot_answer(chain, ["negative", "positive"]))  # what the chain says
    with pytest.raises(Exception, match="not a model under the models root"):
        client.predict("../secret", *_client_fields()[1:], api_name="/score")
    *_, query, note = client.predict("key_value", api_name="/preset")
    assert query == "w" and note == PRESET_NOTES["key_value"]
    # the attention tab: a head's picture (a row per token, the key tokens first) and the induction ranking
    picture, caption = client.predict("gpt", "a good film. a good film.", 1, 0, api_name="/attention")
    assert caption.startswith("**Head 1.0**") and picture.count("<tr>") > 2
    ranking = client.predict("gpt", api_name="/induction_heads")
    assert ranking["headers"][:2] == ["rank", "head"] and len(ranking["data"]) == 8  # 2 layers x 4 heads
    with pytest.raises(Exception, match="does not exist"):
        client.predict("gpt", "a good film.", 5, 0, api_name="/attention")
    # the side-by-side tab: the same model twice answers the same greedy text twice
    first, second = client.predict("gpt", "gpt", "a good film", 4, api_name="/side_by_side")
    assert isinstance(first, str) and first == second


def _client_fields():
    """The `/score` API's values but the last (chat), positionally, in the order the page has always taken them."""
    fields = ("preset", "instruction", "input_prefix", "output_prefix", "delimiter", "labels")
    table = {"headers": ["input", "label"], "data": SENTIMENT_FORM["demonstrations"]}
    return ["gpt", *(SENTIMENT_FORM[name] for name in fields), table, SENTIMENT_FORM["query"]]


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
