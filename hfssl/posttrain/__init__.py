"""Post-training a causal LM (RLHF's three steps, with TRL): instruction tuning, a reward model, DPO and an RL step."""
