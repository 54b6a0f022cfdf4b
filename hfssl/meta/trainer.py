"""Meta-training and meta-testing on N-way K-shot episodes: the engine behind scripts/meta_train.py.

Data: images (Omniglot zip, image folder, parquet, Hub) through `hfssl.data.vision.load_images`; classes
are split into disjoint meta-train / meta-validation / meta-test sets (or meta-test comes from
--eval_dataset). Each outer step averages the meta-loss of `meta_batch_size` episodes and takes one Adam
step. Meta-validation accuracy is logged every `eval_steps`; the final model is tested on
`test_episodes` episodes per shot setting, with a 95% confidence interval 1.96 * std / sqrt(episodes).
A checkpoint (model, optimizer, step, history) is written atomically every `save_steps`; episodes depend
only on (seed, index), so a resumed run continues with exactly the tasks it would have seen.
"""

import contextlib
import json
import logging
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    ViTImageProcessor,
)

from ..adapt.data import load_text_classification
from ..adapt.features import context_window
from ..adapt.task import is_image_config
from ..data.episodes import EpisodeSampler, split_classes
from ..data.vision import channel_stats, load_images
from ..hub import HubArguments
from ..models.simclr import SimCLRConfig, SimCLRForImageClassification
from .algorithms import ALGORITHMS, FunctionalMetaLearner, restore_batch_norm

logger = logging.getLogger(__name__)


@dataclass
class MetaArguments(HubArguments):
    dataset: str = field(
        metadata={
            "help": "Labelled images (Omniglot-style zip, image folder, parquet, Hub name) or, "
            "with a text --model_name_or_path, labelled text (csv/jsonl/'label text' .txt/Hub)."
        }
    )
    algorithm: str = field(default="maml", metadata={"help": "maml, fomaml, anil or protonet."})
    engine: str = field(default="torch.func", metadata={"help": "torch.func (default) or learn2learn."})
    task_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch.func MAML/FOMAML on CPU: tasks of a meta-batch run at once in this many threads, one "
            "intra-op thread each (default: torch's thread count; 1: one task at a time)."
        },
    )
    eval_dataset: str | None = field(
        default=None,
        metadata={"help": "Meta-test classes (e.g. other alphabets); default: held-out classes of --dataset."},
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start from a pretrained model: an image encoder (e.g. hfssl SimCLR) for image data, or a text "
            "model (e.g. hfssl GPT, any AutoModelForSequenceClassification) for labelled text; default: a "
            "fresh small ResNet for images."
        },
    )
    output_dir: str = field(default="outputs/meta", metadata={"help": "Where the model, metrics and checkpoints go."})
    ways: int = field(default=5, metadata={"help": "N: classes per episode."})
    shots: int = field(default=1, metadata={"help": "K: support examples per class during meta-training."})
    queries: int = field(default=15, metadata={"help": "Q: query examples per class."})
    test_shots: list[int] = field(default_factory=lambda: [1, 5], metadata={"help": "Shots to meta-test with."})
    meta_steps: int = field(default=1000, metadata={"help": "Outer (meta) optimisation steps."})
    meta_batch_size: int = field(default=4, metadata={"help": "Episodes per outer step."})
    outer_lr: float = field(default=1e-3, metadata={"help": "Adam learning rate of the outer loop."})
    inner_lr: float = field(default=0.4, metadata={"help": "Inner-loop SGD step size alpha."})
    inner_steps: int = field(default=1, metadata={"help": "Inner gradient steps while meta-training."})
    eval_inner_steps: int = field(default=3, metadata={"help": "Inner gradient steps at meta-validation/test."})
    eval_steps: int = field(default=200, metadata={"help": "Meta-validate every N steps (0: never)."})
    val_episodes: int = field(default=100, metadata={"help": "Episodes per meta-validation."})
    test_episodes: int = field(default=600, metadata={"help": "Episodes per meta-test setting."})
    save_steps: int = field(default=200, metadata={"help": "Write a resumable checkpoint every N steps (0: never)."})
    resume: bool = field(default=False, metadata={"help": "Continue from output_dir/checkpoint.pt if present."})
    image_size: int = field(default=28, metadata={"help": "Images are resized to S x S."})
    class_split: list[float] = field(
        default_factory=lambda: [0.7, 0.15, 0.15],
        metadata={
            "help": "Fractions of --dataset classes for meta-train/val/test (val/test parts are used when needed)."
        },
    )
    resnet_widths: list[int] = field(
        default_factory=lambda: [32, 32, 64, 64],
        metadata={"help": "Stage widths of the fresh ResNet (one basic block per stage)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the class split, episodes and initialisation."})

    def __post_init__(self):
        super().__post_init__()
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"--algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}.")
        if self.engine not in ("torch.func", "learn2learn"):
            raise ValueError(f"--engine must be torch.func or learn2learn, got {self.engine!r}.")


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% confidence interval 1.96 * s / sqrt(n))."""
    if len(values) < 2:
        return statistics.fmean(values), float("nan")
    return statistics.fmean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def build_model(args: MetaArguments) -> nn.Module:
    """An N-way classifier: a pretrained image encoder or text model with a fresh head, or a fresh small ResNet."""
    if args.model_name_or_path:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
        labels = dict(
            num_labels=args.ways,
            id2label={i: f"way {i}" for i in range(args.ways)},
            label2id={f"way {i}": i for i in range(args.ways)},
            ignore_mismatched_sizes=True,
        )
        if is_image_config(config):
            return AutoModelForImageClassification.from_pretrained(args.model_name_or_path, **labels)
        return AutoModelForSequenceClassification.from_pretrained(args.model_name_or_path, **labels)
    config = SimCLRConfig(
        image_size=args.image_size,
        resnet_layers=[1] * len(args.resnet_widths),
        resnet_widths=list(args.resnet_widths),
        projection_dims=[64],
        num_labels=args.ways,
        id2label={i: f"way {i}" for i in range(args.ways)},
    )
    torch.manual_seed(args.seed)
    return SimCLRForImageClassification(config)


def make_learner(args: MetaArguments, model: nn.Module):
    if args.engine == "learn2learn" and args.algorithm != "protonet":
        from .learn2learn_engine import Learn2LearnMetaLearner

        return Learn2LearnMetaLearner(model, args.algorithm, args.inner_lr, args.inner_steps)
    return FunctionalMetaLearner(model, args.algorithm, args.inner_lr, args.inner_steps, task_threads=args.task_threads)


class EpisodeData:
    """Normalised float images (M, C, S, S) + labels, and how to cut an episode's tensors out of them."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean, std):
        self.x = (pixels.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        self.labels = labels

    def tensors(self, episode):
        return self.x[episode.support], episode.support_labels, self.x[episode.query], episode.query_labels


class TextEpisodeData(EpisodeData):
    """Token ids (M, T), right-padded with the pad id (the classifier reads the last real token), + labels."""

    def __init__(self, texts: list[str], labels, tokenizer, window: int | None):
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.x = tokenizer(texts, padding=True, return_tensors="pt")["input_ids"]
        if window is not None and self.x.shape[1] > window:
            raise ValueError(
                f"A text has {self.x.shape[1]} tokens, more than the model's context window ({window}); "
                "shorten it (nothing is truncated silently)."
            )
        self.labels = torch.as_tensor(labels)


def load_episode_data(spec: str, args: MetaArguments, model: nn.Module, tokenizer=None, stats=None):
    """(episode data, number of classes, image (mean, std) or None) for images or, with a tokenizer, text."""
    if tokenizer is not None:
        ds, names = load_text_classification(spec)
        return TextEpisodeData(list(ds["text"]), list(ds["label"]), tokenizer, context_window(model)), len(names), None
    images = load_images(spec, image_size=args.image_size)
    if images.labels is None:
        raise ValueError(f"{images.name} has no labels: meta-learning needs labelled classes.")
    stats = stats or channel_stats(images.pixels)
    return EpisodeData(images.pixels, images.labels, *stats), len(images.label_names), stats


def evaluate(
    learner, data: EpisodeData, sampler: EpisodeSampler, episodes: int, steps: int, desc: str
) -> tuple[float, float]:
    """Mean query accuracy over `episodes` episodes (adapting from the current weights each time), +- 95% CI."""
    accuracies = []
    # ProtoNet needs no gradients at test time; the inner loops of the others do
    context = torch.no_grad() if learner.algorithm == "protonet" else contextlib.nullcontext()
    with context:
        for i in tqdm(range(episodes), desc=desc, leave=False, disable=episodes < 50):
            _, accuracy = learner.task_loss(*data.tensors(sampler[i]), steps=steps, create_graph=False)
            accuracies.append(accuracy)
    return mean_ci95(accuracies)


def _save_atomic(payload, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Running BatchNorm statistics = the average over `x` (meta-train images), so eval() mode is sensible."""
    restore_batch_norm(model)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.momentum = None  # cumulative average
        m.reset_running_stats()
    was_training = model.training
    model.train()
    for start in range(0, len(x), batch_size):
        model(x[start : start + batch_size])
    for m in norms:
        m.momentum = 0.1
    model.train(was_training)


def run_meta_training(args: MetaArguments) -> tuple[nn.Module, dict]:
    """Meta-train, meta-test and save; returns (model, metrics)."""
    torch.manual_seed(args.seed)
    model = build_model(args)
    tokenizer = None
    if not is_image_config(model.config):
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = (
                tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            )
    data, num_classes, stats = load_episode_data(args.dataset, args, model, tokenizer)
    train_classes, val_classes, test_classes = split_classes(num_classes, tuple(args.class_split), args.seed)
    if args.eval_dataset:
        test_data, _, _ = load_episode_data(args.eval_dataset, args, model, tokenizer, stats)
        test_classes = None
        # the meta-test classes come from elsewhere: every --dataset class not used to validate meta-trains
        train_classes = [c for c in range(num_classes) if c not in set(val_classes)]
    else:
        test_data = data
    train_sampler = EpisodeSampler(data.labels, train_classes, args.ways, args.shots, args.queries, seed=args.seed)
    val_sampler = (
        EpisodeSampler(data.labels, val_classes, args.ways, args.shots, args.queries, seed=args.seed + 1)
        if args.eval_steps and len(val_classes) >= args.ways
        else None
    )
    test_samplers = {
        k: EpisodeSampler(test_data.labels, test_classes, args.ways, k, args.queries, seed=args.seed + 2)
        for k in args.test_shots
    }

    learner = make_learner(args, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.outer_lr)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = out / "checkpoint.pt"
    step, history = 0, []
    if args.resume and checkpoint.is_file():
        try:
            state = torch.load(checkpoint, weights_only=False)
        except Exception as err:  # a truncated or foreign file: say which
            raise ValueError(f"Checkpoint {checkpoint} is corrupt or unreadable: {err}") from err
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]
        logger.info("resumed from %s at step %d", checkpoint, step)

    model.train()
    start = time.perf_counter()
    progress = tqdm(total=args.meta_steps, initial=step, desc=f"meta-train ({args.algorithm})")
    while step < args.meta_steps:
        optimizer.zero_grad()
        first = step * args.meta_batch_size
        tasks = [data.tensors(train_sampler[first + t]) for t in range(args.meta_batch_size)]
        mean_loss, accuracies = learner.meta_backward(tasks)
        optimizer.step()
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{statistics.fmean(accuracies):.3f}")
        if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"Meta-loss became {mean_loss} at step {step}; lower --inner_lr "
                "or --outer_lr. The last checkpoint is kept."
            )
        if val_sampler is not None and args.eval_steps and (step % args.eval_steps == 0 or step == args.meta_steps):
            val_mean, val_ci = evaluate(
                learner, data, val_sampler, args.val_episodes, args.eval_inner_steps, "meta-val"
            )
            history.append({"step": step, "train_loss": mean_loss, "val_accuracy": val_mean, "val_ci95": val_ci})
            logger.info(
                "step %d: meta-val %d-way %d-shot accuracy %.4f +- %.4f", step, args.ways, args.shots, val_mean, val_ci
            )
        if args.save_steps and step % args.save_steps == 0 and step < args.meta_steps:
            _save_atomic(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "history": history},
                checkpoint,
            )
            if os.environ.get("HFSSL_TEST_CRASH_AT_STEP") == str(step):  # fault injection for the resume test
                os._exit(3)
    progress.close()
    train_minutes = (time.perf_counter() - start) / 60

    results = {}
    for k, sampler in test_samplers.items():
        mean_acc, ci = evaluate(
            learner, test_data, sampler, args.test_episodes, args.eval_inner_steps, f"meta-test {k}-shot"
        )
        results[f"{args.ways}-way {k}-shot"] = {"accuracy": mean_acc, "ci95": ci, "episodes": args.test_episodes}
        logger.info(
            "meta-test %d-way %d-shot: %.4f +- %.4f (%d episodes)", args.ways, k, mean_acc, ci, args.test_episodes
        )

    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        recalibrate_batch_norm(model, data.x[torch.isin(data.labels, torch.tensor(train_classes))])
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    else:
        ViTImageProcessor(
            size={"height": args.image_size, "width": args.image_size},
            image_mean=stats[0],
            image_std=stats[1],
            do_resize=True,
        ).save_pretrained(out)
    metrics = {
        "method": f"meta-learning ({args.algorithm})",
        "algorithm": args.algorithm,
        "engine": args.engine,
        "meta_test": results,
        "history": history,
        "meta_steps": step,
        "train_minutes": train_minutes,
        "num_meta_train_classes": len(train_classes),
        "args": asdict(args),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if checkpoint.is_file():
        checkpoint.unlink()  # finished: the saved model supersedes it
    return model, metrics
