"""Meta-gradients against finite differences and hand-written first-order / ANIL / ProtoNet formulas,
and the torch.func engine against learn2learn."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hfssl.meta.algorithms import FunctionalMetaLearner


class TinyClassifier(nn.Module):
    """Any backbone: body (Linear + tanh) and a `classifier` head, in float64."""

    def __init__(self, ways=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.config = SimpleNamespace(num_labels=ways)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.classifier = nn.Linear(6, ways)
        self.double()

    def forward(self, x):
        return self.classifier(self.body(x))


def _task(seed=1, ways=3):
    g = torch.Generator().manual_seed(seed)
    x_s, x_q = (
        torch.randn(ways * 2, 4, generator=g, dtype=torch.float64),
        torch.randn(ways * 3, 4, generator=g, dtype=torch.float64),
    )
    y_s, y_q = torch.arange(ways).repeat(2), torch.arange(ways).repeat(3)
    return x_s, y_s, x_q, y_q


def _meta_grad(learner, task):
    learner.model.zero_grad()
    loss, _ = learner.task_loss(*task)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in learner.model.parameters()]), loss.item()


class TinyBatchNormClassifier(TinyClassifier):
    def __init__(self, ways=3, seed=0):
        super().__init__(ways, seed)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh()).double()


MODES = {"loop": dict(task_threads=1), "threads": dict(task_threads=2), "vmap": dict(vectorize=True)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("model_class", [TinyClassifier, TinyBatchNormClassifier])
@pytest.mark.parametrize("steps", [1, 2])
def test_maml_meta_gradient_matches_finite_differences(steps, model_class, mode):
    """The meta-batch gradient (task loop, task threads or vmap) against central differences of the mean meta-loss."""
    model, tasks = model_class(), [_task(1), _task(2)]
    learner = FunctionalMetaLearner(model, "maml", inner_lr=0.5, steps=steps, **MODES[mode])
    model.zero_grad()
    learner.meta_backward(tasks)
    analytic = torch.cat([p.grad.flatten() for p in model.parameters()])
    params = list(model.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    eps = 1e-6

    def loss_at(vector):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(vector, params)
        return sum(learner.task_loss(*task)[0].item() for task in tasks) / len(tasks)

    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        v = torch.randn(flat.shape, generator=g, dtype=torch.float64)
        numeric = (loss_at(flat + eps * v) - loss_at(flat - eps * v)) / (2 * eps)
        assert (analytic @ v).item() == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    loss_at(flat)
    # second order matters: the first-order gradient is measurably different
    fo, _ = _meta_grad(FunctionalMetaLearner(model, "fomaml", inner_lr=0.5, steps=steps), tasks[0])
    so, _ = _meta_grad(learner, tasks[0])
    assert (fo - so).abs().max() > 1e-4


def test_fomaml_equals_the_first_order_formula():
    model, (x_s, y_s, x_q, y_q) = TinyClassifier(), _task()
    got, _ = _meta_grad(FunctionalMetaLearner(model, "fomaml", inner_lr=0.3, steps=1), (x_s, y_s, x_q, y_q))
    # by hand: theta' = theta - alpha grad L_s(theta); meta-gradient = grad L_q at theta', as a constant step
    clone = TinyClassifier()
    clone.load_state_dict(model.state_dict())
    grads = torch.autograd.grad(F.cross_entropy(clone(x_s), y_s), list(clone.parameters()))
    with torch.no_grad():
        for p, g in zip(clone.parameters(), grads):
            p -= 0.3 * g
    expected = torch.autograd.grad(F.cross_entropy(clone(x_q), y_q), list(clone.parameters()))
    torch.testing.assert_close(got, torch.cat([e.flatten() for e in expected]))


def test_anil_adapts_only_the_head():
    model, (x_s, y_s, x_q, y_q) = TinyClassifier(), _task()
    loss, _ = FunctionalMetaLearner(model, "anil", inner_lr=0.3, steps=2).task_loss(x_s, y_s, x_q, y_q)
    # by hand: features from the unchanged body, two SGD steps on (W, b) only
    phi_s, phi_q = model.body(x_s), model.body(x_q)
    w, b = model.classifier.weight, model.classifier.bias
    for _ in range(2):
        gw, gb = torch.autograd.grad(F.cross_entropy(phi_s @ w.T + b, y_s), (w, b), create_graph=True)
        w, b = w - 0.3 * gw, b - 0.3 * gb
    expected = F.cross_entropy(phi_q @ w.T + b, y_q)
    torch.testing.assert_close(loss, expected)
    body_before = [p.detach().clone() for p in model.body.parameters()]
    loss.backward()
    assert all(torch.equal(p, q) for p, q in zip(model.body.parameters(), body_before))  # inner loop never moved it
    assert model.body[0].weight.grad.abs().sum() > 0  # but the meta-gradient reaches it through phi


def test_protonet_logits_are_negative_squared_distances():
    model, (x_s, y_s, x_q, y_q) = TinyClassifier(), _task()
    loss, accuracy = FunctionalMetaLearner(model, "protonet").task_loss(x_s, y_s, x_q, y_q)
    phi_s, phi_q = model.body(x_s), model.body(x_q)
    prototypes = torch.stack([phi_s[y_s == k].mean(0) for k in range(3)])
    logits = -((phi_q[:, None, :] - prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y_q))
    assert accuracy == pytest.approx((logits.argmax(-1) == y_q).double().mean().item())


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil"])
def test_torch_func_and_learn2learn_agree(algorithm):
    pytest.importorskip("learn2learn", reason="learn2learn is optional: bash scripts/install_learn2learn.sh")
    from hfssl.meta.learn2learn_engine import Learn2LearnMetaLearner

    task = _task()
    ours, loss_ours = _meta_grad(FunctionalMetaLearner(TinyClassifier(), algorithm, inner_lr=0.4, steps=2), task)
    theirs, loss_theirs = _meta_grad(Learn2LearnMetaLearner(TinyClassifier(), algorithm, inner_lr=0.4, steps=2), task)
    assert loss_ours == pytest.approx(loss_theirs, rel=1e-10)
    torch.testing.assert_close(ours, theirs, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["maml", "fomaml", "anil", "protonet"])
def test_vmapped_meta_batch_equals_the_loop(algorithm):
    """Also a regression test for BatchNorm under vmap (see algorithms._normalise_with_batch_statistics)."""
    tasks = [_task(seed) for seed in (1, 2, 3)]
    grads = []
    for vectorize in (False, True):
        model = TinyBatchNormClassifier()
        learner = FunctionalMetaLearner(model, algorithm, inner_lr=0.4, steps=2, vectorize=vectorize)
        loss, accuracies = learner.meta_backward(tasks)
        grads.append(
            (
                loss,
                accuracies,
                torch.cat(
                    [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()]
                ),
            )
        )
    (loop_loss, loop_acc, loop_grad), (vec_loss, vec_acc, vec_grad) = grads
    assert vec_loss == pytest.approx(loop_loss, rel=1e-12) and vec_acc == pytest.approx(loop_acc)
    torch.testing.assert_close(vec_grad, loop_grad, rtol=1e-10, atol=1e-12)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="--algorithm must be one of"):
        FunctionalMetaLearner(TinyClassifier(), "reptile")


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_task_threads_equal_the_loop_and_restore_the_thread_count(algorithm):
    tasks = [_task(seed) for seed in (1, 2, 3)]
    results = {}
    for threads in (1, 2, 3):
        model = TinyBatchNormClassifier()
        learner = FunctionalMetaLearner(model, algorithm, inner_lr=0.4, steps=2, task_threads=threads)
        assert learner.threads_for(len(tasks)) == threads
        before = torch.get_num_threads()
        loss, accuracies = learner.meta_backward(tasks)
        assert torch.get_num_threads() == before
        results[threads] = (torch.cat([p.grad.flatten() for p in model.parameters()]), loss, accuracies)
    for threads in (2, 3):
        torch.testing.assert_close(results[threads][0], results[1][0], rtol=1e-12, atol=1e-14)
        assert results[threads][1] == pytest.approx(results[1][1], rel=1e-12)
        assert results[threads][2] == results[1][2]


def test_task_threads_must_be_positive():
    with pytest.raises(ValueError, match="task_threads"):
        FunctionalMetaLearner(TinyClassifier(), "maml", task_threads=0)


@pytest.mark.parametrize("algorithm", ["protonet", "anil", "fomaml"])
def test_a_text_encoder_does_not_attend_to_the_padding(bert_dir, algorithm):
    """TextEpisodeData pads every text to the longest one: a BERT's features and logits of a text must not change
    with the number of pad tokens after it (the forward gets the attention mask of the real tokens)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfssl.meta.algorithms import features, forward

    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    ids = torch.tensor([tokenizer("the cat sat on the mat")["input_ids"]])
    padded = torch.cat([ids, torch.full((1, 7), tokenizer.pad_token_id)], dim=1)
    torch.testing.assert_close(features(model, padded), features(model, ids))
    torch.testing.assert_close(forward(model, padded).logits, forward(model, ids).logits)
    assert not torch.allclose(model(padded).logits, model(ids).logits)  # without the mask the padding would count
    learner = FunctionalMetaLearner(model, algorithm, inner_lr=0.1, steps=1, task_threads=1)
    y = torch.tensor([0, 1])
    short = (torch.cat([ids, ids]), y, torch.cat([ids, ids]), y)
    long = (torch.cat([padded, padded]), y, torch.cat([padded, padded]), y)
    with torch.no_grad() if algorithm == "protonet" else torch.enable_grad():
        torch.testing.assert_close(
            learner.task_loss(*long, create_graph=False)[0], learner.task_loss(*short, create_graph=False)[0]
        )


def test_text_episodes_are_cut_to_their_own_length(bert_dir):
    """An episode's ids are as long as its longest text, not the data set's; the task loop runs episodes of different
    lengths, and vectorize (which stacks them) refuses them with a clear error."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from hfssl.data.episodes import EpisodeSampler
    from hfssl.meta.episode_data import TextEpisodeData

    tokenizer = AutoTokenizer.from_pretrained(bert_dir)
    texts = ["a cat", "the dog", "a bird sang", "one fish", "so " * 8 + "long", "the song", "two cows", "a hat"]
    data = TextEpisodeData(texts, [0, 1, 0, 1, 0, 1, 0, 1], tokenizer, window=32)
    sampler = EpisodeSampler(data.labels, None, ways=2, shots=1, queries=1, seed=0)
    shapes = set()
    for i in range(6):
        episode = sampler[i]
        x_s, _, x_q, _ = data.tensors(episode)
        for x, idx in ((x_s, episode.support), (x_q, episode.query)):
            assert x.shape[1] == int(data.lengths[idx].max()) <= data.x.shape[1]
            torch.testing.assert_close(x, data.x[idx, : x.shape[1]])
            assert (data.x[idx, x.shape[1] :] == tokenizer.pad_token_id).all()  # only padding was cut
            shapes.add(x.shape[1])
    assert len(shapes) > 1
    tasks = [data.tensors(sampler[i]) for i in range(6)]
    model = AutoModelForSequenceClassification.from_pretrained(bert_dir, num_labels=2)
    loss, accuracies = FunctionalMetaLearner(model, "fomaml", inner_lr=0.1, task_threads=1).meta_backward(tasks)
    assert torch.isfinite(torch.tensor(loss)) and len(accuracies) == 6
    with pytest.raises(ValueError, match="equally shaped"):
        FunctionalMetaLearner(model, "fomaml", inner_lr=0.1, vectorize=True).meta_backward(tasks)
