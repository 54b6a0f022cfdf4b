"""`--analysis_steps`: the induction probe (hfssl.analysis.probe) logged during pretraining, before the first step,
every N steps and at the last, into metrics.json and the tracker; its numbers are the probe's own on the saved model;
bad settings are one error line."""

import json

import pytest

from hfssl import GPTForCausalLM
from hfssl.analysis.probe import BEST_HEAD, ICL_SCORE, LOSS_SECOND_COPY, PREFIX_MATCHING_MAX, InductionProbe
from hfssl.models.loading import load_causal_lm
from tests.conftest import TINY_LM_FLAGS, import_script, tiny_gpt_config, with_flags

pretrain = import_script("pretrain")
KEYS = {PREFIX_MATCHING_MAX, BEST_HEAD, LOSS_SECOND_COPY, ICL_SCORE}


def _probe_entries(out) -> dict[int, dict]:
    history = json.loads((out / "metrics.json").read_text())["log_history"]
    return {entry["step"]: entry for entry in history if PREFIX_MATCHING_MAX in entry}


def test_analysis_steps_log_the_probe_on_schedule(tmp_path, corpus_file):
    out = tmp_path / "run"
    argv = with_flags(TINY_LM_FLAGS, "--max_steps", "5", "--analysis_steps", "2")
    assert pretrain.main(["--dataset", str(corpus_file), "--output_dir", str(out), *argv]) == 0
    entries = _probe_entries(out)
    assert sorted(entries) == [0, 2, 4, 5]  # before training, every 2 steps, and the last
    for entry in entries.values():
        assert set(entry) >= KEYS
        assert 0.0 <= entry[PREFIX_MATCHING_MAX] <= 1.0
        assert entry[BEST_HEAD] in range(2 * 4)  # 2 layers x 4 heads
        assert entry[LOSS_SECOND_COPY] > 0
    assert len({entry[LOSS_SECOND_COPY] for entry in entries.values()}) > 1  # measured on the model as it trains
    # the last entry is the probe's measurement of the saved model (same seeded inputs, same held-out blocks)
    model, tokenizer = load_causal_lm(str(out))
    probe = InductionProbe.for_blocks(model, tokenizer, 16, [list(range(3, 19))] * 4)
    again = probe.measure(model)
    for key in (PREFIX_MATCHING_MAX, BEST_HEAD, LOSS_SECOND_COPY):
        assert again[key] == pytest.approx(entries[5][key], abs=1e-4)


def test_probe_sizes_follow_the_blocks():
    tiny_gpt = GPTForCausalLM(tiny_gpt_config(max_position_embeddings=256))
    probe = InductionProbe.for_blocks(tiny_gpt, None, 128, [list(range(200))] * 3 + [list(range(50))])
    assert (probe.seq_len, probe.early, probe.late) == (32, 32, 128)
    assert probe.held_out.shape == (3, 128)  # the short block is left out
    assert ICL_SCORE not in InductionProbe.for_blocks(tiny_gpt, None, 16).measure(tiny_gpt)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--analysis_steps", "-1"], "analysis_steps"),
        (["--analysis_steps", "1", "--block_size", "6"], "at least 8 tokens"),
        (["--analysis_steps", "1", "--analysis_length", "32"], "longer than the held-out blocks"),
        (["--analysis_steps", "1", "--analysis_length", "0"], "--analysis_length must be > 0"),
    ],
)
def test_bad_analysis_settings_are_one_error_line(tmp_path, corpus_file, capsys, flags, message):
    argv = ["--dataset", str(corpus_file), "--output_dir", str(tmp_path / "run"), *with_flags(TINY_LM_FLAGS, *flags)]
    assert pretrain.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and message in err[-1]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_probe_reads_only_trained_positions_by_default():
    """With an in-context warm-up on shorter blocks, the probe reads the warm-up's length; else the block's."""
    from hfssl.training.causal_lm import CausalLMArguments, CausalLMObjective

    def length(**flags) -> int:
        args = CausalLMArguments(block_size=16, max_steps=10, analysis_steps=1, **flags)
        return CausalLMObjective(args)._analysis_length()

    assert length(icl_warmup_steps=0) == 16
    assert length(icl_warmup_steps=2, icl_warmup_block_size=8) == 8
    assert length(icl_warmup_steps=2, icl_warmup_block_size=8, analysis_length=12) == 12
