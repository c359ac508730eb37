"""Named entries that a config key selects: the fine-tuning methods (`adapter.method`) and the
objectives (`train.objective`). One place decides how a name is registered and how an unknown
one is reported, so every table answers the same way."""

from __future__ import annotations

from typing import Generic, TypeVar

from hone.errors import HoneError

T = TypeVar("T")


class Registry(dict, Generic[T]):
    """name -> entry, for the config key `key` (e.g. "adapter.method")."""

    def __init__(self, key: str, what: str):
        super().__init__()
        self.key, self.what = key, what

    def add(self, name: str, entry: T) -> T:
        """Register `entry` under `name` (a name may be registered once)."""
        if name in self:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (tests that register their own)."""
        self.pop(name, None)

    def find(self, name: str) -> T:
        """The entry named `name`; an unknown name is a HoneError naming the config key."""
        if name not in self:
            known = ", ".join(sorted(self))
            raise HoneError(f"config key {self.key}: {name!r} is not a known {self.what} (known: {known})",
                            f"set {self.key} to one of {known}")
        return self[name]
