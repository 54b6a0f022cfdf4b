"""`hfssl.run.steps.adamw`: torch's AdamW, fused where every tensor allows it, the same update as the unfused one."""

import torch

from hfssl.run.steps import adamw


def _params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(7, 5, dtype=dtype)), torch.nn.Parameter(torch.randn(5, dtype=dtype))]


def _steps(optimizer, params, n=5):
    for step in range(n):
        loss = sum((p.abs() ** 1.5).sum() * (step + 1) for p in params)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return [p.detach().clone() for p in params]


def test_fused_on_cpu_floating_point_and_the_same_update_as_torch_default():
    fused_params, reference_params = _params(), _params()
    groups = [{"params": fused_params[:1], "lr": 1e-2}, {"params": fused_params[1:], "lr": 1e-1}]
    fused = adamw(groups, weight_decay=0.1)
    assert all(group["fused"] for group in fused.param_groups)
    reference = torch.optim.AdamW(
        [{"params": reference_params[:1], "lr": 1e-2}, {"params": reference_params[1:], "lr": 1e-1}], weight_decay=0.1
    )
    assert not any(group["fused"] for group in reference.param_groups)
    for got, expected in zip(_steps(fused, fused_params), _steps(reference, reference_params), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
        assert not torch.equal(got, _params()[0 if got.dim() == 2 else 1])  # the weights did move


def test_a_tensor_fused_adamw_does_not_take_leaves_the_choice_to_torch():
    params = _params(torch.complex64)
    optimizer = adamw(params, lr=1e-2)
    assert not any(group["fused"] for group in optimizer.param_groups)
    assert not torch.equal(_steps(optimizer, params, n=1)[0], _params(torch.complex64)[0])  # and it steps


def test_an_asked_for_implementation_is_kept():
    optimizer = adamw(_params(), lr=1e-2, foreach=True)
    assert optimizer.param_groups[0]["foreach"] and not optimizer.param_groups[0]["fused"]


def test_groups_given_as_generators_or_empty_keep_their_tensors():
    """A generator in a group is read once to choose, and torch still gets every tensor; an empty group (a LoRA run's
    head group) is allowed."""
    model = torch.nn.Linear(5, 3)
    optimizer = adamw([{"params": model.parameters()}, {"params": [], "lr": 1.0}], lr=1e-2)
    assert [len(group["params"]) for group in optimizer.param_groups] == [2, 0]
    assert optimizer.param_groups[0]["fused"]
    before = model.weight.detach().clone()
    _steps(optimizer, list(model.parameters()), n=1)
    assert not torch.equal(model.weight, before)
