"""Classification metrics through `evaluate`, offline: the metric module ships inside hfssl."""

from pathlib import Path
from typing import TypedDict

_SCRIPT = Path(__file__).resolve().parent / "metric_scripts" / "classification_metrics.py"


def classification_metric():
    """An `evaluate` metric computing {"accuracy", "macro_f1"}; needs no network."""
    import evaluate

    return evaluate.load(str(_SCRIPT))


class ClassificationScores(TypedDict):
    accuracy: float
    macro_f1: float


def classification_scores(predictions, references) -> ClassificationScores:
    return classification_metric().compute(
        predictions=[int(p) for p in predictions], references=[int(r) for r in references]
    )
