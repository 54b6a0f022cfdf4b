"""Results of prompting that can be trusted (#34 items 4 and 7): a query never sees itself among its demonstrations,
an overlap between the pool and the queries is reported (and refused when large), a generated answer names a label
only as a whole word, and a temperature that is not a finite number >= 0 is refused instead of decoding greedily."""

import json
import logging

import pytest
import torch

from hfssl import GPTForCausalLM
from hfssl.adapt.chain_of_thought import parse_cot_answer
from hfssl.adapt.prompt_classifier import PromptClassifier
from hfssl.adapt.prompt_eval import PromptEvalArguments
from hfssl.adapt.prompts import PromptTemplate, get_template, own_text_matches, select_demonstrations
from hfssl.run.errors import InputError
from hfssl.run.results import load_result
from hfssl.serving.prompt_form import PromptForm
from tests.conftest import import_script, tiny_gpt_config

SENTIMENT = get_template("sentiment")
STRATEGIES = ["random", "balanced", "nearest"]


def _selection(strategy: str, labels: list[int], k: int, seed: int, num_queries: int, **kwargs) -> list[list[int]]:
    """select_demonstrations with fixed embeddings for 'nearest' (pool i is e_i; query q is near pool q)."""
    n = len(labels)
    pool = torch.eye(n)
    queries = torch.stack([pool[q % n] + 0.1 * pool[(q + 1) % n] for q in range(num_queries)])
    return select_demonstrations(
        labels,
        k,
        strategy=strategy,
        seed=seed,
        num_queries=num_queries,
        pool_embeddings=pool,
        query_embeddings=queries,
        **kwargs,
    )


# ---- item 4: a query is never its own demonstration -----------------------------------------------------------
def test_own_text_matches_compare_stripped_text():
    pool = ["a fine film", " dull ", "a fine film", "Dull"]
    assert own_text_matches(pool, ["a fine film ", "dull", "DULL", "other"]) == [{0, 2}, {1}, set(), set()]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_no_exclusion_changes_nothing(strategy):
    """Excluding nothing (no query's text in the pool) keeps every selection as it was, draw for draw."""
    labels = [0, 1, 0, 1, 2, 0, 1, 2, 0, 1, 1, 0]
    for seed in range(5):
        for k in (1, 3, 6):
            before = _selection(strategy, labels, k, seed, num_queries=4)
            assert _selection(strategy, labels, k, seed, num_queries=4, exclude=[set()] * 4) == before


def test_selections_pinned_before_the_exclusion_stay():
    """The draws of test_prompting.py's selection test, with an (empty) exclusion."""
    labels = [0] * 10 + [1] * 10 + [2] * 4
    plain = select_demonstrations(labels, 6, strategy="balanced", seed=3, num_queries=2)
    assert select_demonstrations(labels, 6, strategy="balanced", seed=3, num_queries=2, exclude=[set(), set()]) == plain
    pool = torch.eye(4)
    queries = torch.tensor([[0.0, 1.0, 0.2, 0.0], [0.0, 0.0, 0.1, 1.0]])
    nearest = select_demonstrations(
        [0, 1, 0, 1],
        2,
        strategy="nearest",
        seed=0,
        pool_embeddings=pool,
        query_embeddings=queries,
        num_queries=2,
        exclude=[set(), set()],
    )
    assert nearest == [[2, 1], [2, 3]]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_query_never_gets_its_own_text(strategy):
    labels = [0, 1] * 6
    n = len(labels)
    for seed in range(6):
        plain = _selection(strategy, labels, 4, seed, num_queries=n)
        exclude = [{q} for q in range(n)]  # query q is pool example q (the same file given twice)
        chosen = _selection(strategy, labels, 4, seed, num_queries=n, exclude=exclude)
        for q, row in enumerate(chosen):
            assert q not in row and len(set(row)) == 4 and all(0 <= i < n for i in row)
            if q not in plain[q]:
                assert row == plain[q]  # a query whose own example was not drawn keeps its draw
            elif strategy == "balanced":  # a replacement keeps the classes balanced
                assert sorted(labels[i] for i in row) == sorted(labels[i] for i in plain[q])
    nearest_plain = _selection("nearest", labels, 1, 0, num_queries=3)
    assert [row[-1] for row in nearest_plain] == [0, 1, 2]  # without the exclusion, each query is its own nearest


def test_too_few_examples_besides_the_query_are_refused():
    with pytest.raises(InputError, match="2 demonstrations asked for"):
        select_demonstrations([0, 1], 2, strategy="random", seed=0, num_queries=1, exclude=[{0}])


def _write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(gpt_dir, dataset, out, *extra):
    return [
        "--model_name_or_path",
        str(gpt_dir),
        "--dataset",
        str(dataset),
        "--shots",
        "0,2",
        "--num_seeds",
        "2",
        "--max_eval_examples",
        "12",
        "--per_device_eval_batch_size",
        "8",
        "--output_file",
        str(out),
        *extra,
    ]


def test_a_pool_that_is_the_query_set_is_refused(gpt_dir, sentiment_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    main = import_script("prompt_eval").main
    assert main(_argv(gpt_dir, sentiment_file, out, "--demos_dataset", str(sentiment_file))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 12 of the 12 queries")
    assert "--allow_demo_overlap" in err[0] and "10%" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["random", "nearest"])
def test_an_allowed_overlap_is_reported_and_never_leaks(gpt_dir, sentiment_file, tmp_path, caplog, strategy):
    seen: list[tuple[list[str], list[list[str]]]] = []
    score = PromptClassifier.score

    def spy(self, queries, demos_per_query, **kwargs):
        seen.append((list(queries), [list(d) for d in demos_per_query]))
        return score(self, queries, demos_per_query, **kwargs)

    out = tmp_path / "r.json"
    argv = _argv(gpt_dir, sentiment_file, out, "--demos_dataset", str(sentiment_file), "--allow_demo_overlap")
    with pytest.MonkeyPatch.context() as patch, caplog.at_level(logging.WARNING):
        patch.setattr(PromptClassifier, "score", spy)
        assert import_script("prompt_eval").main([*argv, "--strategy", strategy]) == 0
    assert json.loads(out.read_text())["pool_query_overlap"] == 12
    assert load_result(out).pool_query_overlap == 12  # part of the typed result, so it survives a reload
    assert "12 of the 12 queries" in caplog.text
    with_demos = [(queries, demos) for queries, demos in seen if any(demos)]
    assert with_demos
    for queries, demos in with_demos:
        for query, own in zip(queries, demos):
            assert len(own) == 2 and not any(d.startswith(SENTIMENT.query(query)) for d in own), (query, own)


def test_a_small_overlap_runs_with_a_warning(gpt_dir, sentiment_file, tmp_path, caplog):
    lines = sentiment_file.read_text().splitlines()
    queries = lines[:6] + lines[-6:]  # both classes
    demos = _write_lines(tmp_path / "demos.txt", [queries[0], "1 a new good song", "0 a new bad song", "1 fine fine"])
    data = _write_lines(tmp_path / "queries.txt", queries)
    out = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING):
        assert import_script("prompt_eval").main(_argv(gpt_dir, data, out, "--demos_dataset", str(demos))) == 0
    assert json.loads(out.read_text())["pool_query_overlap"] == 1
    assert "1 of the 12 queries" in caplog.text


def test_repeated_texts_in_the_default_split_are_warned_about_not_refused(gpt_dir, tmp_path, caplog):
    """The default pool is disjoint from the queries by rows; it shares texts only where --dataset repeats them."""
    data = _write_lines(tmp_path / "twice.txt", [f"{y} the film number {i}" for i in range(12) for y in (0, 1)])
    out = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING):
        assert import_script("prompt_eval").main(_argv(gpt_dir, data, out)) == 0
    overlap = json.loads(out.read_text())["pool_query_overlap"]
    assert overlap > 0.1 * 12 and f"{overlap} of the 12 queries" in caplog.text
    assert "kept for demonstrations" in caplog.text


def test_disjoint_queries_and_pool_report_no_overlap(gpt_dir, sentiment_file, tmp_path, caplog):
    out = tmp_path / "r.json"
    with caplog.at_level(logging.WARNING):
        assert import_script("prompt_eval").main(_argv(gpt_dir, sentiment_file, out)) == 0
    assert json.loads(out.read_text())["pool_query_overlap"] == 0
    assert "queries" not in caplog.text


# ---- item 7a: a label word is a whole word --------------------------------------------------------------------
def test_a_generated_answer_names_a_label_only_as_a_whole_word(tiny_tokenizer):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=128)).eval()
    template = PromptTemplate(verbalizer={"no": "no", "yes": "yes"})
    classifier = PromptClassifier(model, tiny_tokenizer, template, ["no", "yes"])
    assert classifier.parse_answer("nobody knows") == -1
    assert classifier.parse_answer(" Nobody") == -1
    assert classifier.parse_answer("yesterday") == -1
    assert classifier.parse_answer("no.") == 0
    assert classifier.parse_answer("No, never") == 0
    assert classifier.parse_answer(" no") == 0
    assert classifier.parse_answer("Yes!") == 1
    assert classifier.parse_answer("nobody said yes") == 1  # the whole word it names first


def test_a_chain_names_a_label_only_as_a_whole_word():
    assert parse_cot_answer("nobody knows", ["no", "yes"]) == (-1, "none", None)
    assert parse_cot_answer("The answer is nobody.", ["no", "yes"]) == (-1, "answer_statement", "nobody")
    assert parse_cot_answer("The answer is no.", ["no", "yes"]) == (0, "answer_statement", "no")
    assert parse_cot_answer("No, never", ["no", "yes"]) == (0, "last_label_word", "no")


# ---- item 7b: a temperature is a finite number >= 0 -----------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_temperature_that_is_no_finite_non_negative_number_is_one_error_line(gpt_dir, sentiment_file, value, capsys):
    main = import_script("prompt_eval").main
    argv = ["--model_name_or_path", str(gpt_dir), "--dataset", str(sentiment_file), "--shots", "0"]
    assert main([*argv, "--max_eval_examples", "2", "--mode", "generate", "--temperature", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --temperature") and value in err[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), -0.5])
def test_the_api_refuses_such_temperatures_too(value, tiny_tokenizer):
    with pytest.raises(InputError, match="--temperature"):
        PromptEvalArguments(model_name_or_path="m", dataset="d.txt", mode="generate", temperature=value)
    with pytest.raises(InputError, match="temperature"):
        PromptForm(model="gpt", temperature=str(value))
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=128)).eval()
    classifier = PromptClassifier(model, tiny_tokenizer, SENTIMENT, ["0", "1"])
    with pytest.raises(InputError, match="temperature"):
        classifier.sample(["a dog"], [[]], max_new_tokens=2, temperature=value)
