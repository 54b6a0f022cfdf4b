"""Run under `torchrun --nproc_per_node 2 THIS OUT_DIR`: the model side of FSDP2 sharding, with torch's own
`fully_shard` over gloo (Accelerate's FSDP path needs GPUs). For hfssl's GPT (tied embeddings) and SimCLR (ResNet
stages, BatchNorm), every module named in the model's `_no_split_modules` and then the root are sharded; one AdamW
step on a batch that every rank sees whole; the full state dict is gathered on rank 0, saved with `save_pretrained`
and reloaded with `from_pretrained`; its logits are compared with those of the same model trained unsharded.
Writes OUT_DIR/report.json."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from transformers import AutoModel, AutoModelForCausalLM

import hfssl  # noqa: F401  (registers the models)
from hfssl.models.encoders import SimCLRConfig, SimCLRModel
from hfssl.models.gpt import GPTConfig, GPTForCausalLM


def _gpt():
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32
    )
    return GPTForCausalLM(config)


def _simclr():
    torch.manual_seed(0)
    config = SimCLRConfig(image_size=8, resnet_layers=[1, 1], resnet_widths=[8, 16], projection_dims=[16, 8])
    return SimCLRModel(config)


def _batch(kind):
    generator = torch.Generator().manual_seed(1)
    if kind == "gpt":
        ids = torch.randint(0, 64, (4, 16), generator=generator)
        return {"input_ids": ids, "labels": ids}
    return {
        "pixel_values": torch.rand(4, 3, 8, 8, generator=generator),
        "pixel_values_2": torch.rand(4, 3, 8, 8, generator=generator),
    }


def _outputs(model, kind) -> torch.Tensor:
    batch = _batch(kind)
    with torch.no_grad():
        if kind == "gpt":
            return model(input_ids=batch["input_ids"]).logits
        return model(pixel_values=batch["pixel_values"]).embeddings


def _step(model, kind) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss = model(**_batch(kind)).loss
    loss.backward()
    optimizer.step()
    return loss.item()


def _shard(model) -> int:
    """Shard each `_no_split_modules` unit, then the root; returns the number of units."""
    units = [m for m in model.modules() if type(m).__name__ in model._no_split_modules]
    for module in units:
        fully_shard(module)
    fully_shard(model)
    return len(units)


def check(kind, make, auto, out: Path) -> dict:
    reference = make()
    reference_loss = _step(reference, kind)
    sharded = make()
    units = _shard(sharded)
    loss = _step(sharded, kind)
    # each rank holds about 1/world of every parameter (DTensor shards), not a full copy
    local = sum(p.to_local().numel() for p in sharded.parameters()) / sum(p.numel() for p in sharded.parameters())
    full = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    report = {}
    if dist.get_rank() == 0:
        keys = len(full)  # (save_pretrained empties the dict it is given)
        plain = make()  # an unsharded model of the same class to save the gathered weights with
        plain.save_pretrained(out / kind, state_dict=full)
        reloaded = auto.from_pretrained(out / kind).train(reference.training)
        diff = (_outputs(reloaded, kind) - _outputs(reference, kind)).abs().max().item()
        report = {
            "units": units,
            "loss_diff": abs(loss - reference_loss),
            "max_abs_diff": diff,
            "keys": keys,
            "local_fraction": local,
        }
    dist.barrier()
    return report


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    reports = {
        "world_size": dist.get_world_size(),
        "gpt": check("gpt", _gpt, AutoModelForCausalLM, out),
        "simclr": check("simclr", _simclr, AutoModel, out),
    }
    if dist.get_rank() == 0:
        (out / "report.json").write_text(json.dumps(reports))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
