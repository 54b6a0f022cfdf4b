"""Contextual calibration (Zhao et al. 2021, "Calibrate Before Use") and expected calibration error.

Label probabilities of a prompt are p = softmax(l) over the C label options, with l_c the summed
log-likelihood of option c. A content-free input ("N/A", "", "[MASK]") placed where the query goes, with
the same demonstrations, gives p_cf: the prompt's bias towards each label. Calibration divides it out:

    q = normalise(W p),  W = diag(p_cf)^-1,  p_cf = mean over content-free inputs of p(input)

which is the paper's affine correction with b = 0.
"""

import torch

CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")


def label_probabilities(loglikelihoods: torch.Tensor) -> torch.Tensor:
    """(N, C) summed option log-likelihoods -> (N, C) probabilities over the C options."""
    return torch.softmax(loglikelihoods.double(), dim=-1)


def contextual_calibration(probs: torch.Tensor, content_free_probs: torch.Tensor) -> torch.Tensor:
    """probs (N, C) and content-free probs (M, C) or (N, M, C) (per-query prompts) -> calibrated (N, C).

    The content-free estimate is averaged over its M inputs, then divided out and renormalised.
    """
    p_cf = content_free_probs.mean(dim=-2)  # (C,) or (N, C)
    calibrated = probs / p_cf.clamp_min(1e-12)
    return calibrated / calibrated.sum(dim=-1, keepdim=True)


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, num_bins: int = 10) -> float:
    """ECE = sum_b |B_b| / N * |accuracy(B_b) - mean confidence(B_b)|, over equal-width confidence bins.

    probs: (N, C); labels: (N,) ints. Confidence is the top probability; bins are (i/B, (i+1)/B].
    """
    confidence, prediction = probs.max(dim=-1)
    correct = (prediction == labels).double()
    bins = torch.clamp((confidence * num_bins).ceil().long() - 1, 0, num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.double().mean().item() * abs(
                correct[in_bin].mean().item() - confidence[in_bin].double().mean().item()
            )
    return ece
