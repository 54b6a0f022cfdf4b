"""A bounded, thread-safe least-recently-used cache of loaded models."""

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from ..run.errors import InputError


class LRUCache:
    """At most `max_size` values; `get(key, load)` returns the cached value or stores `load()`, and the least
    recently used entry goes when there are more. Loads run under the lock, so two requests for one model load it
    once."""

    def __init__(self, max_size: int):
        if max_size < 1:
            raise InputError(f"An LRU cache holds at least 1 entry, not {max_size}.")
        self.max_size = max_size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = load()
            self._entries[key] = value
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
            return value

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
