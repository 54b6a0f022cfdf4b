"""Zero-shot image classification: the prompt ensemble against its formula, the class names it refuses, and
scripts/zero_shot_image.py on a saved tiny dual encoder."""

import json

import pytest
import torch
from torch.nn import functional as F

from hfssl.models.dual_encoder import check_class_names, class_embeddings
from hfssl.run.errors import InputError
from tests.conftest import import_script
from tests.models.test_modeling_clip import _saved

zero_shot_image = import_script("zero_shot_image")


def test_the_class_embedding_is_the_normalised_mean_of_normalised_template_embeddings(tmp_path, tiny_encoder_tokenizer):
    model, _ = _saved(tmp_path, tiny_encoder_tokenizer)
    templates = ["a photo of a {}.", "a drawing of the {}.", "{}"]
    w = class_embeddings(model, tiny_encoder_tokenizer, ["cat", "dog"], templates, batch_size=4)
    with torch.no_grad():
        for c, name in enumerate(["cat", "dog"]):
            per_template = []
            for template in templates:
                encoded = tiny_encoder_tokenizer([template.format(name)], return_tensors="pt")
                per_template.append(F.normalize(model.get_text_features(**encoded)[0], dim=0))
            expected = F.normalize(torch.stack(per_template).mean(0), dim=0)
            torch.testing.assert_close(w[c], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "names, message",
    [
        (["cat"], "at least 2 class names"),
        (["cat", "dog", "cat"], "given more than once: cat"),
        (["cat", " "], "empty"),
    ],
)
def test_class_names_that_cannot_classify_are_refused(names, message):
    with pytest.raises(InputError, match=message):
        check_class_names(names)


def test_the_script_classifies_a_chosen_subset_with_one_template(tmp_path, tiny_encoder_tokenizer, capsys):
    _, path = _saved(tmp_path, tiny_encoder_tokenizer)
    out = tmp_path / "result.json"
    argv = ["--model_name_or_path", str(path), "--classes", "7", "8", "9", "--no_ensemble", "--output_file", str(out)]
    assert zero_shot_image.main(argv) == 0
    assert "3 classes, 1 template(s)" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["class_names"] == ["7", "8", "9"] and result["num_templates"] == 1
    assert result["num_images"] == 179 + 174 + 180  # scikit-learn's 7s, 8s and 9s
    assert 0 <= result["accuracy"] <= 1 and set(result["per_class_accuracy"]) == {"7", "8", "9"}


def test_the_script_says_what_is_wrong_in_one_line(tmp_path, tiny_encoder_tokenizer, capsys):
    _, path = _saved(tmp_path, tiny_encoder_tokenizer)
    assert zero_shot_image.main(["--model_name_or_path", str(path), "--classes", "7"]) == 2
    assert "at least 2 class names" in capsys.readouterr().err
    assert zero_shot_image.main(["--model_name_or_path", str(path), "--classes", "7", "eleven"]) == 2
    assert "--classes names eleven" in capsys.readouterr().err
