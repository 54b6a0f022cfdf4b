"""Sharing on the Hugging Face Hub: the upload folder and its model card (`card.py`), the push (`upload.py`)."""

from ..run.arguments import HubArguments
from .card import build_model_card
from .errors import NETWORK_ERRORS, HubError
from .upload import prepare_upload_folder, push_after_training, push_to_hub

__all__ = [
    "NETWORK_ERRORS",
    "HubArguments",
    "HubError",
    "build_model_card",
    "prepare_upload_folder",
    "push_after_training",
    "push_to_hub",
]
