"""The labelled examples episodes are cut from: normalised images or padded token ids, and their labels."""

from typing import cast

import torch
from torch import nn

from ..data.labelled import load_labelled
from ..data.vision import channel_stats
from ..models.helpers import check_fits_context, context_window, ensure_pad_token


class EpisodeData:
    """Normalised float images (M, C, S, S) + labels, and how to cut an episode's tensors out of them."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean, std):
        self.x = (pixels.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        self.labels = labels

    def tensors(self, episode):
        """(support inputs, support labels, query inputs, query labels) of an `Episode`."""
        return self.x[episode.support], episode.support_labels, self.x[episode.query], episode.query_labels


class TextEpisodeData(EpisodeData):
    """Token ids (M, T), right-padded with the pad id (the classifier reads the last real token), + labels.

    An episode's support and query ids are cut to their own longest text: padding to the data set's longest
    text would only add masked columns to every forward."""

    def __init__(self, texts: list[str], labels, tokenizer, window: int | None):
        encoded = ensure_pad_token(tokenizer)(texts, padding=True, return_tensors="pt")
        self.lengths = encoded["attention_mask"].sum(dim=1)
        check_fits_context(self.lengths.tolist(), window, texts)
        self.x = encoded["input_ids"]
        self.labels = torch.as_tensor(labels)

    def _ids(self, indices: torch.Tensor) -> torch.Tensor:
        return self.x[indices, : int(self.lengths[indices].max())]

    def tensors(self, episode):
        return self._ids(episode.support), episode.support_labels, self._ids(episode.query), episode.query_labels


def load_episode_data(spec: str, image_size: int, model: nn.Module, tokenizer=None, stats=None):
    """(episode data, number of classes, image (mean, std) or None) for images or, with a tokenizer, text.

    stats: the (mean, std) to normalise images with (default: this data's own, e.g. the meta-train set's).
    """
    if tokenizer is not None:
        data = load_labelled(spec)
        texts = cast(list[str], data.inputs)  # load_labelled without an image_size loads texts
        return TextEpisodeData(texts, data.labels, tokenizer, context_window(model)), len(data.names), None
    data = load_labelled(spec, image_size=image_size)
    pixels = cast(torch.Tensor, data.inputs)  # load_labelled with an image_size loads images
    stats = stats or channel_stats(pixels)
    return EpisodeData(pixels, data.labels, *stats), len(data.names), stats
