"""Which DIMSE operations each calling AE title may invoke (``[dimse.permissions]``).

The allow-list (``allowed_aes``) decides who may associate; permissions decide what an associated AE
may ask for. Without permissions every AE that may associate may do everything (the behaviour before
permissions existed). Once any permission is configured, an AE may do what its own entry lists; an AE
without an entry gets the ``"*"`` entry, or nothing. C-ECHO is always allowed: it changes nothing and
is how peers test connectivity. A refused request is answered 0x0124 "Refused: Not Authorized", one of
the general failure statuses every DIMSE service may use (PS3.7 Annex C), with an Error Comment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Operation = Literal["store", "find", "move", "get"]
OPERATIONS: tuple[Operation, ...] = ("store", "find", "move", "get")
ANY_AE = "*"
"""The entry that applies to calling AE titles without one of their own."""


@dataclass(frozen=True)
class Permissions:
    """AE title -> the operations it may invoke; empty = not configured, everything allowed."""

    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, entries: Mapping[str, Iterable[str]] | None) -> Permissions:
        """Validate ``{AE: [operation, ...]}`` (the form of ``[dimse.permissions]``); ValueError names
        the AE and the unknown operation."""
        grants: dict[str, frozenset[str]] = {}
        for title, operations in (entries or {}).items():
            if isinstance(operations, str):
                raise ValueError(f"DIMSE permissions of {title!r} must be a list of operations")  # noqa: TRY004
            allowed = frozenset(str(operation).strip().lower() for operation in operations)
            unknown = sorted(allowed - set(OPERATIONS))
            if unknown:
                raise ValueError(
                    f"DIMSE permissions of {title!r}: {', '.join(unknown)} not one of {', '.join(OPERATIONS)}"
                )
            grants[str(title).strip()] = allowed
        return cls(grants)

    @property
    def configured(self) -> bool:
        return bool(self.grants)

    def allows(self, ae_title: str, operation: Operation) -> bool:
        """Whether ``ae_title`` (the calling AE title, trailing padding ignored) may invoke ``operation``."""
        if not self.grants:
            return True
        title = ae_title.strip()
        granted = self.grants.get(title)
        if granted is None:
            granted = self.grants.get(ANY_AE, frozenset())
        return operation in granted


def parse_permissions(value: str) -> dict[str, list[str]]:
    """``CT01=store,WS1=find+move+get`` (the environment form of ``[dimse.permissions]``)."""
    entries: dict[str, list[str]] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        title, separator, operations = part.partition("=")
        if not separator or not title.strip():
            raise ValueError(f"DIMSE permissions: {part.strip()!r} is not AE=operation+operation")
        entries[title.strip()] = [op.strip() for op in operations.split("+") if op.strip()]
    return entries


__all__ = ["ANY_AE", "OPERATIONS", "Operation", "Permissions", "parse_permissions"]
