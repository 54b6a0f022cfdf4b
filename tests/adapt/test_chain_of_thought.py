"""Chain-of-thought prompting: the answer parse rule on hand-written chains, the majority vote, the prompt layout,
seeded batched sampling, and `run_prompt_eval` with --chain_of_thought end to end on a tiny GPT."""

import json

import pytest
import torch

from hfssl import GPTForCausalLM
from hfssl.adapt.chain_of_thought import (
    ChainAnswer,
    chain_stop_strings,
    cot_demonstration,
    cot_template,
    cut_chain,
    majority_vote,
    parse_cot_answer,
)
from hfssl.adapt.prompt_classifier import Generations, PromptClassifier
from hfssl.adapt.prompt_eval import PromptEvalArguments, _vote, format_table, run_prompt_eval
from hfssl.adapt.prompts import get_template
from hfssl.data.labelled import load_labelled
from tests.conftest import tiny_gpt_config, tiny_llama_config

SENTIMENT = get_template("sentiment")
WORDS = ["negative", "positive"]
NUMBERS = ["7", "12", "-3", "1000"]

# (chain, label words, expected label index, rule that reads it); the answer read is checked apart (ANSWERS)
PARSES = [
    # 1. the last answer statement decides
    ("The king forgets the song, which is sad. The answer is negative.", WORDS, 0, "answer_statement"),
    ("Answer: Positive", WORDS, 1, "answer_statement"),
    ("**Answer:** positive", WORDS, 1, "answer_statement"),
    ("the final answer is: negative", WORDS, 0, "answer_statement"),
    ("The answer is positive. Some would call the ending negative.", WORDS, 1, "answer_statement"),
    ("At first the answer is positive. Looking again, the answer is negative", WORDS, 0, "answer_statement"),
    ("The answer is negative, not positive.", WORDS, 0, "answer_statement"),
    ("The answer is neutral.", WORDS, -1, "answer_statement"),  # an answer, but no label
    ("3 + 4 = 7. The answer is 7.", NUMBERS, 0, "answer_statement"),
    ("The answer is 12.", NUMBERS, 1, "answer_statement"),
    ("The answer is 12.0 apples", NUMBERS, 1, "answer_statement"),
    ("It costs 5 less, so the answer is -3.", NUMBERS, 2, "answer_statement"),
    ("Ten hundreds make the answer = 1,000.", NUMBERS, 3, "answer_statement"),
    ("The answer is 7 apples, not 12.", NUMBERS, 0, "answer_statement"),
    ("The answer is 13.", NUMBERS, -1, "answer_statement"),
    # 2. numeric labels, no statement: the last number
    ("She had 10 and lost 13, so she has -3 left", NUMBERS, 2, "last_number"),
    ("We count 1,000 then take 988 away: 12", NUMBERS, 1, "last_number"),
    ("From 3-7 apples", NUMBERS, 0, "last_number"),  # a range, not minus seven
    ("She has 8 left.", NUMBERS, -1, "last_number"),
    # 3. label words, no statement: the label word that occurs last
    ("The review praises the song, so it is positive.", WORDS, 1, "last_label_word"),
    ("It opens negative but ends positive", WORDS, 1, "last_label_word"),
    ("Not positive at all: NEGATIVE.", WORDS, 0, "last_label_word"),
    ("It is positive. The answer is", WORDS, 1, "last_label_word"),  # a cut-off statement states nothing
    ("What the answer is. Overall negative", WORDS, 0, "last_label_word"),
    # 4. nothing to read: a parse failure
    ("nonnegative and positively", WORDS, -1, "none"),
    ("The king forgets the song.", WORDS, -1, "none"),
    ("", WORDS, -1, "none"),
    ("no numbers here", NUMBERS, -1, "none"),
]


@pytest.mark.parametrize(("chain", "words", "label", "rule"), PARSES)
def test_parse_cot_answer_on_hand_written_chains(chain, words, label, rule):
    read = parse_cot_answer(chain, words)
    assert (read.label, read.rule) == (label, rule)
    if label >= 0:
        assert read.answer == words[label]
    if rule == "none":
        assert read.answer is None  # only a chain with nothing read is a parse failure


@pytest.mark.parametrize(
    ("chain", "words", "answer"),
    [
        # answered, but no label: the answer itself, to count as wrong and to vote
        ("The answer is neutral.", WORDS, "neutral"),
        ("So, the answer is: **Mixed feelings**!", WORDS, "mixed feelings"),
        ("The answer is 13.", NUMBERS, "13"),
        ("The answer is 2.50 dollars", NUMBERS, "2.5"),
        ("So, the answer is: 1,221", NUMBERS, "1221"),
        ("The answer is eleven.", NUMBERS, "eleven"),
        ("She has 8 left.", NUMBERS, "8"),
        # a label: its word as the labels write it
        ("The answer is 12.0 apples", NUMBERS, "12"),
        ("Answer: POSITIVE", WORDS, "positive"),
    ],
)
def test_an_answer_outside_the_labels_is_read_not_a_parse_failure(chain, words, answer):
    assert parse_cot_answer(chain, words).answer == answer


def test_the_longest_label_word_wins_where_two_match_at_once():
    words = ["positive", "very positive"]
    assert parse_cot_answer("The answer is very positive.", words) == (1, "answer_statement", "very positive")
    assert parse_cot_answer("Some say positive; I say very positive", words) == (1, "last_label_word", "very positive")


@pytest.mark.parametrize(
    ("samples", "vote"),
    [
        (["b", "b", "a"], "b"),
        (["a", "b", "b"], "b"),
        (["b", "a"], "b"),  # a tie: the answer that appears first
        (["a", "b", "b", "a"], "a"),
        (["c", "b", "b", "c", "a"], "c"),
        ([None, None, "b"], "b"),  # parse failures do not vote
        ([None, "a", None, "b", "b"], "b"),
        (["221", "361", "221"], "221"),  # a wrong answer outside the labels votes, and can win
        ([None, None], None),
        ([], None),
    ],
)
def test_majority_vote(samples, vote):
    assert majority_vote(samples) == vote


@pytest.mark.parametrize(
    ("answers", "label"),
    [
        ([ChainAnswer(1, "answer_statement", "positive"), ChainAnswer(0, "last_label_word", "negative")] * 2, 1),
        ([ChainAnswer(-1, "answer_statement", "221")] * 2 + [ChainAnswer(0, "answer_statement", "361")], -1),
        ([ChainAnswer(-1, "none", None), ChainAnswer(0, "answer_statement", "361")], 0),
        ([ChainAnswer(-1, "none", None)] * 3, -1),
        ([], -1),
    ],
)
def test_the_vote_maps_back_to_a_label_or_to_wrong(answers, label):
    """An off-label answer that wins the vote makes the query wrong (-1), whatever label its rivals named."""
    vote = _vote(answers)
    assert (vote.label if vote is not None else -1) == label


def test_a_statement_with_no_letter_or_digit_states_nothing():
    assert parse_cot_answer("It is positive. The answer is ___.", WORDS) == (1, "last_label_word", "positive")
    assert parse_cot_answer("The answer is ***", WORDS) == (-1, "none", None)


def test_demonstration_and_query_layout():
    demo = cot_demonstration(SENTIMENT, "a fine film", "It praises the film", "positive")
    assert demo == "Review: a fine film\nSentiment: It praises the film. The answer is positive."
    assert SENTIMENT.context([demo], "dull") == f"{demo}\n\nReview: dull\nSentiment:"
    assert cot_template(SENTIMENT, None) == SENTIMENT
    zero_shot = cot_template(SENTIMENT, "Let's think step by step.")
    assert zero_shot.context([], "dull") == "Review: dull\nSentiment: Let's think step by step."
    assert (
        cot_demonstration(zero_shot, "a fine film", "  It praises the film!\n", "positive")
        == "Review: a fine film\nSentiment: Let's think step by step. It praises the film! The answer is positive."
    )
    assert cot_demonstration(SENTIMENT, "x", "", "negative") == "Review: x\nSentiment: The answer is negative."
    # the answer sentence of a demonstration is what the parser reads first
    assert parse_cot_answer(demo.split("Sentiment:")[1], WORDS) == (1, "answer_statement", "positive")
    gsm8k = get_template("sentiment", input_prefix="Q: ", output_prefix="A:", verbalizer={"6": "6"})
    assert cot_demonstration(gsm8k, "How many?", "21 - 15 = 6", "6") == "Q: How many?\nA: 21 - 15 = 6. The answer is 6."


def test_a_chain_ends_where_the_model_starts_another_example():
    stops = chain_stop_strings(SENTIMENT)
    assert stops == ["Review:", "\n\n"]
    assert chain_stop_strings(SENTIMENT, with_demonstrations=False) == ["Review:"]  # zero-shot: paragraphs allowed
    assert cut_chain("Sad. The answer is negative.\n\nReview: next one", stops) == "Sad. The answer is negative."
    assert cut_chain("Sad. The answer is negative. Review: more", stops) == "Sad. The answer is negative. "
    assert cut_chain("no stop here", stops) == "no stop here"
    assert chain_stop_strings(get_template("key_value")) == ["\n"]


def _classifier(tokenizer, template=SENTIMENT, batch_size=16):
    torch.manual_seed(0)
    model = GPTForCausalLM(tiny_gpt_config(vocab_size=len(tokenizer), max_position_embeddings=128)).eval()
    return PromptClassifier(model, tokenizer, template, ["0", "1"], batch_size=batch_size)


QUERIES = ["a dog", "the cat likes the song", "the river calls the ship"]


def test_self_consistency_samples_are_batched_counted_and_seeded(tiny_tokenizer):
    classifier = _classifier(tiny_tokenizer)
    before = torch.random.get_rng_state()
    first = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=6, num_samples=3, temperature=1.0, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is left alone
    assert [len(row) for row in first.texts] == [3, 3, 3] and [len(row) for row in first.num_tokens] == [3, 3, 3]
    assert all(1 <= n <= 6 for row in first.num_tokens for n in row)
    again = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=6, num_samples=3, temperature=1.0, seed=7)
    assert again == first
    other = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=6, num_samples=3, temperature=1.0, seed=8)
    assert other.texts != first.texts
    assert len({t for row in first.texts for t in row}) > 3  # the samples of one prompt differ
    # one prompt per forward pass when batch_size < num_samples: still three chains each
    small = _classifier(tiny_tokenizer, batch_size=2)
    assert [
        len(row) for row in small.sample(QUERIES, [[]] * 3, max_new_tokens=4, num_samples=3, temperature=1.0).texts
    ] == [
        3,
        3,
        3,
    ]
    with pytest.raises(ValueError, match="temperature > 0"):
        classifier.sample(QUERIES, [[]] * 3, max_new_tokens=4, num_samples=2)


@pytest.mark.parametrize("architecture", ["hfssl-gpt", "llama", "gpt2"])
def test_samples_read_one_encoding_of_the_prompt_and_draw_what_generate_draws(tiny_tokenizer, architecture):
    """Each prompt is encoded once for all its samples (a cache repeated per sample): the seeded draws are those of
    transformers' generate(num_return_sequences=n), which encodes it n times, on left-padded prompts of several
    lengths and three architectures (positions from the padding mask, a GQA cache, learned positions)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

    from hfssl.adapt.prompt_classifier import stop_token_ids

    classifier = _classifier(tiny_tokenizer)
    torch.manual_seed(1)
    if architecture == "llama":
        classifier.model = LlamaForCausalLM(tiny_llama_config(vocab_size=len(tiny_tokenizer))).eval()
    elif architecture == "gpt2":
        config = GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=128)
        classifier.model = GPT2LMHeadModel(config).eval()
    sampled = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=8, num_samples=4, temperature=1.0, seed=3)
    tokenizer = classifier.tokenizer
    tokenizer.padding_side = "left"
    contexts = [classifier.context([], q) for q in QUERIES]
    batch = tokenizer(contexts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert batch["attention_mask"].min() == 0  # the prompts differ in length: some rows are padded
    torch.manual_seed(3)
    reference = classifier.model.generate(
        **batch,
        max_new_tokens=8,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        num_return_sequences=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_token_ids(tokenizer),
    )
    texts = tokenizer.batch_decode(reference[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert [t for row in sampled.texts for t in row] == texts
    assert len(set(texts)) > 3  # real sampling: the comparison could fail


def test_samples_repeat_the_prompt_as_generate_does_where_it_cannot_be_encoded_once(tiny_tokenizer, monkeypatch):
    """A model that returns no transformers Cache (or asks generate for a cache of its own) samples as before."""
    from hfssl.adapt import prompt_classifier

    classifier = _classifier(tiny_tokenizer)
    settings = dict(max_new_tokens=8, num_samples=4, temperature=1.0, seed=3)
    encoded_once = classifier.sample(QUERIES, [[]] * 3, **settings)
    no_cache: list = []
    monkeypatch.setattr(prompt_classifier, "output_cache", lambda outputs: no_cache.append(1))  # returns None
    assert classifier.sample(QUERIES, [[]] * 3, **settings) == encoded_once
    assert no_cache  # the prompt was encoded, no cache came back, and generate() repeated the prompt
    monkeypatch.undo()
    classifier.model.generation_config.cache_implementation = "dynamic"
    assert prompt_classifier._prompts_encoded_once(classifier.model, {}, 4) is None


def test_greedy_sample_is_generate_and_stop_strings_cut_the_chain(tiny_tokenizer):
    classifier = _classifier(tiny_tokenizer)
    texts, _ = classifier.generate(QUERIES, [[]] * 3, max_new_tokens=6)
    greedy = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=6)
    assert [row[0] for row in greedy.texts] == texts
    cut = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=12, num_samples=2, temperature=1.0, stop_strings=["e"])
    assert all("e" not in t for row in cut.texts for t in row)
    uncut = classifier.sample(QUERIES, [[]] * 3, max_new_tokens=12, num_samples=2, temperature=1.0)
    assert sum(map(sum, cut.num_tokens)) < sum(map(sum, uncut.num_tokens))  # generation stopped early


@pytest.fixture
def cot_model_dir(tmp_path, tiny_tokenizer):
    """A tiny GPT with a 256-token window: room for worked demonstrations and a chain."""
    path = tmp_path / "gpt256"
    torch.manual_seed(0)
    GPTForCausalLM(tiny_gpt_config(vocab_size=len(tiny_tokenizer), max_position_embeddings=256)).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def rationale_file(tmp_path):
    rows = [
        {"text": f"the king {verb} the song {i}", "label": label, "rationale": f"The king {verb} it"}
        for i in range(10)
        for verb, label in (("likes", "positive"), ("forgets", "negative"))
    ]
    path = tmp_path / "reasons.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rationales_travel_with_their_texts(rationale_file):
    data = load_labelled(str(rationale_file), rationale_column="rationale")
    assert data.rationales is not None and len(data.rationales) == len(data) == 20
    part = data.subset([3, 0])
    assert part.inputs == ["the king forgets the song 1", "the king likes the song 0"]
    assert part.rationales == ["The king forgets it", "The king likes it"]
    assert data.merged_by_key(":").rationales == data.rationales
    assert load_labelled(str(rationale_file)).rationales is None  # read only when asked for
    assert load_labelled(str(rationale_file), rationale_column="why").rationales is None


def test_run_prompt_eval_with_chain_of_thought_and_self_consistency(cot_model_dir, rationale_file, tmp_path):
    out = tmp_path / "cot.json"
    args = PromptEvalArguments(
        model_name_or_path=str(cot_model_dir),
        dataset=str(rationale_file),
        shots="0,2",
        num_seeds=2,
        chain_of_thought=True,
        num_samples=3,
        temperature=0.8,
        cot_max_new_tokens=8,
        per_device_eval_batch_size=6,
        output_file=str(out),
    )
    assert args.mode == "generate"
    result = run_prompt_eval(args)
    for k in ("0", "2"):
        row = result.shots[k]
        assert set(row) == {"accuracy", "accuracy_single", "parse_failures", "off_label_answers", "tokens_per_query"}
        assert len(row["accuracy"]["runs"]) == 2  # sampling: every seed is a draw, k = 0 too
        assert all(0 <= v <= 1 for name in ("accuracy", "accuracy_single", "parse_failures") for v in row[name]["runs"])
        assert all(0 < v <= 3 * 8 for v in row["tokens_per_query"]["runs"])
        chain = result.chains[k][0]
        assert len(chain["chains"]) == len(chain["answers"]) == len(chain["rules"]) == 3
        assert chain["gold"] in ("negative", "positive") and chain["prediction"] in ("negative", "positive", None)
    assert len(result.chains["0"]) == 10  # every query: fewer than the 20 kept
    saved = json.loads(out.read_text())
    assert saved["chains"]["2"][0]["query"] == result.chains["2"][0]["query"]
    table = format_table(result)
    assert "parse_failures" in table and "tokens_per_query" in table and "samples" in table
    again = run_prompt_eval(args)  # seeded: the same chains and numbers
    assert again.shots == result.shots and again.chains == result.chains


def test_zero_shot_chain_of_thought_needs_no_rationale(cot_model_dir, sentiment_file):
    args = PromptEvalArguments(
        model_name_or_path=str(cot_model_dir),
        dataset=str(sentiment_file),
        shots="0",
        chain_of_thought=True,
        cot_trigger="Let's think step by step.",
        cot_max_new_tokens=6,
        max_eval_examples=8,
    )
    result = run_prompt_eval(args)
    assert set(result.shots["0"]) == {"accuracy", "parse_failures", "off_label_answers", "tokens_per_query"}
    assert 0 <= result.shots["0"]["parse_failures"]["mean"] <= 1
    plain = PromptEvalArguments(model_name_or_path=str(cot_model_dir), dataset=str(sentiment_file), shots="0")
    assert "chains" not in run_prompt_eval(plain).to_dict()  # runs without chain-of-thought keep their layout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"chain_of_thought": True, "num_samples": 3}, "set --temperature > 0"),
        ({"chain_of_thought": True, "temperature": -1.0}, "--temperature must be >= 0"),
        ({"chain_of_thought": True, "calibrate": True}, "--calibrate"),
        ({"num_samples": 2, "temperature": 0.5}, "add --chain_of_thought or --mode generate"),
        ({"temperature": 0.5}, "add --chain_of_thought or --mode generate"),
        ({"cot_trigger": "Think."}, "add --chain_of_thought"),
        ({"chain_of_thought": True, "num_samples": 0}, "--num_samples must be > 0"),
    ],
)
def test_bad_generation_arguments(flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        PromptEvalArguments(model_name_or_path="m", dataset="d.txt", **flags)


def test_sampling_without_chain_of_thought_votes_short_answers(cot_model_dir, sentiment_file):
    args = PromptEvalArguments(
        model_name_or_path=str(cot_model_dir),
        dataset=str(sentiment_file),
        shots="0",
        num_seeds=1,
        mode="generate",
        num_samples=2,
        temperature=1.0,
        max_eval_examples=6,
    )
    result = run_prompt_eval(args)
    assert set(result.shots["0"]) == {"accuracy", "accuracy_single", "invalid_answers"} and not result.chains


def test_metrics_count_votes_single_samples_failures_and_tokens(cot_model_dir, rationale_file, monkeypatch):
    """Hand-written chains in place of the model's: 'likes' queries (gold positive) get (wrong, right, right),
    'forgets' queries (gold negative) two answers outside the labels and one unreadable chain; each chain 1, 2 and 3
    tokens long."""

    def fake_sample(self, queries, demos_per_query, **kwargs):
        assert kwargs["num_samples"] == 3 and kwargs["stop_strings"] == ["Review:"]  # zero-shot
        likes = ["So negative.", "The answer is positive.", "Answer: positive"]
        forgets = ["The answer is neutral.", "The answer is Neutral!", "hmm"]
        texts = [likes if "likes" in q else forgets for q in queries]
        return Generations(texts, [[1, 2, 3] for _ in queries])

    monkeypatch.setattr(PromptClassifier, "sample", fake_sample)
    args = PromptEvalArguments(
        model_name_or_path=str(cot_model_dir),
        dataset=str(rationale_file),
        shots="0",
        num_seeds=1,
        chain_of_thought=True,
        num_samples=3,
        temperature=1.0,
    )
    result = run_prompt_eval(args)
    queries = [c["query"] for c in result.chains["0"]]
    share_likes = sum("likes" in q for q in queries) / len(queries)
    assert 0 < share_likes < 1
    row = {name: values["runs"][0] for name, values in result.shots["0"].items()}
    # the vote fixes every 'likes' query; 'forgets' queries vote 'neutral', an answer but no label: wrong
    assert row["accuracy"] == pytest.approx(share_likes)
    assert row["accuracy_single"] == 0.0
    assert row["parse_failures"] == pytest.approx((1 - share_likes) / 3)
    assert row["off_label_answers"] == pytest.approx((1 - share_likes) * 2 / 3)
    assert row["tokens_per_query"] == 6.0
    for chain in result.chains["0"][:4]:
        if "likes" in chain["query"]:
            assert chain["answers"] == ["negative", "positive", "positive"] and chain["prediction"] == "positive"
            assert chain["rules"] == ["last_label_word", "answer_statement", "answer_statement"] and chain["correct"]
        else:
            assert chain["answers"] == ["neutral", "neutral", None] and chain["prediction"] == "neutral"
            assert chain["rules"] == ["answer_statement", "answer_statement", "none"] and not chain["correct"]
