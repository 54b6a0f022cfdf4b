"""Accuracy and macro-F1 as an `evaluate` metric module, shipped inside hfssl so it loads offline.

`evaluate.load("accuracy")` fetches its script from the Hub; `evaluate.load(<path of this file>)` needs
no network. Loaded through `hfssl.adapt.metrics.classification_metric()`.
"""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

_DESCRIPTION = """accuracy = correct / total; macro_f1 = unweighted mean over classes of 2PR / (P + R)."""


class ClassificationMetrics(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions: list of int; references: list of int",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {
            "accuracy": float(accuracy_score(references, predictions)),
            "macro_f1": float(f1_score(references, predictions, average="macro", zero_division=0)),
        }
