"""Meta-training and meta-testing on N-way K-shot episodes: the engine behind scripts/meta_train.py.

Data: labelled images (Omniglot zip, image folder, parquet, Hub) or, with a text model, labelled text; classes are
split into disjoint meta-train / meta-validation / meta-test sets (or meta-test comes from --eval_dataset). Each outer
step averages the meta-loss of `meta_batch_size` episodes and takes one Adam step. Meta-validation accuracy is logged
every `eval_steps`; the final model is tested on `test_episodes` episodes per shot setting, with a 95% confidence
interval 1.96 * std / sqrt(episodes). Checkpoints (`checkpoints/step-N/`, the layout every hfssl loop uses) are
written every `save_steps`; episodes depend only on (seed, index), so a resumed run continues with exactly the tasks
it would have seen.
"""

import contextlib
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import (
    AutoModelForImageClassification,
    PreTrainedModel,
    ViTImageProcessor,
)

from ..data.episodes import EpisodeSampler, split_classes
from ..models.encoders import SimCLRConfig, SimCLRForImageClassification
from ..models.helpers import ensure_pad_token, is_image_model
from ..models.loading import load_config, load_pretrained, load_tokenizer
from ..models.pooling import load_text_classifier, refuse_pooling_for_images
from ..run.callbacks import CallbackList
from ..run.checkpoints import (
    TrainerState,
    load_training_state,
    read_trainer_state,
    save_training_state,
    write_checkpoint,
)
from ..run.output import publish
from ..run.results import MetaResult, MetaTestScore, save_result
from ..run.start import prepare_run
from ..run.steps import checkpoint_due, optimizer_step
from .algorithms import FunctionalMetaLearner, restore_batch_norm
from .arguments import MetaArguments
from .episode_data import EpisodeData, load_episode_data

logger = logging.getLogger(__name__)

__all__ = ["MetaArguments", "build_model", "mean_ci95", "run_meta_training"]


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the normal 95% confidence interval 1.96 * s / sqrt(n))."""
    if len(values) < 2:
        return statistics.fmean(values), float("nan")
    return statistics.fmean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def build_model(args: MetaArguments) -> PreTrainedModel:
    """An N-way classifier: a pretrained image encoder or text model with a fresh head, or a fresh small ResNet."""
    ways: dict[str, Any] = dict(
        id2label={i: f"way {i}" for i in range(args.ways)}, label2id={f"way {i}": i for i in range(args.ways)}
    )
    if args.model_name_or_path:
        config = load_config(args.source)
        if not is_image_model(config):
            return load_text_classifier(args.source, args.pooling, config, num_labels=args.ways, **ways)[0]
        refuse_pooling_for_images(args.pooling, args.source)
        return load_pretrained(
            AutoModelForImageClassification, args.source, new_head=True, num_labels=args.ways, **ways
        )
    config = SimCLRConfig(
        image_size=args.image_size,
        resnet_layers=[1] * len(args.resnet_widths),
        resnet_widths=list(args.resnet_widths),
        projection_dims=[64],
        num_labels=args.ways,
        id2label=ways["id2label"],
    )
    torch.manual_seed(args.seed)
    return SimCLRForImageClassification(config)


def make_learner(args: MetaArguments, model: nn.Module):
    if args.engine == "learn2learn" and args.algorithm != "protonet":
        from .learn2learn_engine import Learn2LearnMetaLearner

        return Learn2LearnMetaLearner(model, args.algorithm, args.inner_lr, args.inner_steps)
    return FunctionalMetaLearner(model, args.algorithm, args.inner_lr, args.inner_steps, task_threads=args.task_threads)


def evaluate(learner, data: EpisodeData, sampler: EpisodeSampler, episodes: int, steps: int, desc: str):
    """(mean query accuracy over `episodes` episodes, adapting from the current weights each time; 95% CI)."""
    accuracies = []
    # ProtoNet needs no gradients at test time; the inner loops of the others do
    context = torch.no_grad() if learner.algorithm == "protonet" else contextlib.nullcontext()
    with context:
        for i in tqdm(range(episodes), desc=desc, leave=False, disable=episodes < 50):
            _, accuracy = learner.task_loss(*data.tensors(sampler[i]), steps=steps, create_graph=False)
            accuracies.append(accuracy)
    return mean_ci95(accuracies)


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


@dataclass
class _Episodes:
    """The data and the seeded samplers of one run."""

    data: EpisodeData
    test_data: EpisodeData
    train: EpisodeSampler
    val: EpisodeSampler | None
    test: dict[int, EpisodeSampler]
    train_classes: list[int]
    stats: tuple | None


def _episodes(args: MetaArguments, model: nn.Module, tokenizer) -> _Episodes:
    data, num_classes, stats = load_episode_data(args.dataset, args.image_size, model, tokenizer)
    test_classes: list[int] | None
    train_classes, val_classes, test_classes = split_classes(num_classes, tuple(args.class_split), args.seed)
    test_data = data
    if args.eval_dataset:
        test_data, _, _ = load_episode_data(args.eval_dataset, args.image_size, model, tokenizer, stats)
        test_classes = None
        # the meta-test classes come from elsewhere: every --dataset class not used to validate meta-trains
        train_classes = [c for c in range(num_classes) if c not in set(val_classes)]
    sampler = lambda d, classes, k, seed: EpisodeSampler(d.labels, classes, args.ways, k, args.queries, seed=seed)  # noqa: E731
    val = (
        sampler(data, val_classes, args.shots, args.seed + 1)
        if args.eval_steps and len(val_classes) >= args.ways
        else None
    )
    test = {k: sampler(test_data, test_classes, k, args.seed + 2) for k in args.test_shots}
    return _Episodes(
        data, test_data, sampler(data, train_classes, args.shots, args.seed), val, test, train_classes, stats
    )


def _meta_train(args: MetaArguments, model, learner, episodes: _Episodes, checkpoint, callbacks: CallbackList):
    """The outer loop, from `checkpoint` or from step 0. Returns the TrainerState at the end."""
    optimizer = torch.optim.Adam(model.parameters(), lr=args.outer_lr)
    state = TrainerState()
    if checkpoint is not None:
        state = read_trainer_state(checkpoint)
        load_training_state(checkpoint, model, optimizer)
        logger.info("resumed from %s at step %d", checkpoint, state.global_step)
    model.train()
    progress = tqdm(total=args.max_steps, initial=state.global_step, desc=f"meta-train ({args.algorithm})")
    while state.global_step < args.max_steps:
        callbacks.on_step_begin(state.global_step + 1)
        optimizer.zero_grad()  # validation between steps may have left gradients
        first = state.global_step * args.meta_batch_size
        tasks = [episodes.data.tensors(episodes.train[first + t]) for t in range(args.meta_batch_size)]
        mean_loss, accuracies = learner.meta_backward(tasks)
        optimizer_step(
            optimizer,
            None,
            mean_loss,
            step=state.global_step + 1,
            output_dir=args.output_dir,
            advice="Lower --inner_lr or --outer_lr",
            max_grad_norm=args.max_grad_norm,
            clip=lambda max_norm: torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm),
        )
        state.global_step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{statistics.fmean(accuracies):.3f}")
        _validate_on_schedule(args, learner, episodes, state, mean_loss)
        if checkpoint_due(args.save_steps, state.global_step, final=state.global_step >= args.max_steps):
            save = lambda folder: save_training_state(folder, model, optimizer)  # noqa: E731
            written = write_checkpoint(
                args.output_dir, state, save, keep=args.save_total_limit, run_args=args.to_dict()
            )
            callbacks.on_save(written)
        callbacks.on_step_end(state.global_step, mean_loss)
    progress.close()
    return state


def _validate_on_schedule(args, learner, episodes: _Episodes, state: TrainerState, train_loss: float) -> None:
    step = state.global_step
    if episodes.val is None or not args.eval_steps or (step % args.eval_steps and step != args.max_steps):
        return
    mean, ci = evaluate(learner, episodes.data, episodes.val, args.val_episodes, args.eval_inner_steps, "meta-val")
    state.log_history.append({"step": step, "train_loss": train_loss, "val_accuracy": mean, "val_ci95": ci})
    logger.info("step %d: meta-val %d-way %d-shot accuracy %.4f +- %.4f", step, args.ways, args.shots, mean, ci)


def _meta_test(args: MetaArguments, learner, episodes: _Episodes) -> dict[str, MetaTestScore]:
    scores = {}
    for k, sampler in episodes.test.items():
        mean, ci = evaluate(
            learner, episodes.test_data, sampler, args.test_episodes, args.eval_inner_steps, f"meta-test {k}-shot"
        )
        scores[f"{args.ways}-way {k}-shot"] = MetaTestScore(accuracy=mean, ci95=ci, episodes=args.test_episodes)
        logger.info("meta-test %d-way %d-shot: %.4f +- %.4f (%d episodes)", args.ways, k, mean, ci, args.test_episodes)
    return scores


def run_meta_training(args: MetaArguments, callbacks=None) -> MetaResult:
    """Meta-train, meta-test, and save the model and metrics.json to args.output_dir."""
    checkpoint = prepare_run(args, [args.source.input_path if args.model_name_or_path else None])
    torch.manual_seed(args.seed)
    model = build_model(args)
    tokenizer = None
    if not is_image_model(model.config):
        tokenizer = ensure_pad_token(load_tokenizer(args.source), model)
    episodes = _episodes(args, model, tokenizer)
    learner = make_learner(args, model)
    start = time.perf_counter()
    state = _meta_train(args, model, learner, episodes, checkpoint, CallbackList(callbacks))
    train_minutes = (time.perf_counter() - start) / 60
    result = MetaResult(
        method=f"meta-learning ({args.algorithm})",
        algorithm=args.algorithm,
        engine=args.engine,
        task="text-classification" if tokenizer is not None else "image-classification",
        meta_test=_meta_test(args, learner, episodes),
        history=state.log_history,
        meta_steps=state.global_step,
        train_minutes=train_minutes,
        num_meta_train_classes=len(episodes.train_classes),
        args=args.to_dict(),
    )
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        recalibrate_batch_norm(
            model, episodes.data.x[torch.isin(episodes.data.labels, torch.tensor(episodes.train_classes))]
        )

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        else:
            mean, std = cast(tuple, episodes.stats)  # images: their (mean, std)
            ViTImageProcessor(
                size={"height": args.image_size, "width": args.image_size},
                image_mean=mean,
                image_std=std,
                do_resize=True,
            ).save_pretrained(folder)
        save_result(result, folder)

    publish(args.output_dir, write)
    return result
