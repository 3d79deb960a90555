"""Domain errors. The web layer maps each class to an HTTP status in one place (api/errors.py).

Every error carries a message and, where it concerns input, a list of ``Problem`` entries that
name the feature or field and the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input: where (feature index or id, field) and why."""

    reason: str
    field: str | None = None
    feature: Any = None
    detail: dict[str, Any] = dataclass_field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, {})}

    def __str__(self) -> str:
        where = []
        if self.feature is not None:
            where.append(f"feature {self.feature}")
        if self.field:
            where.append(f"field '{self.field}'")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


class WanggeError(Exception):
    """Base of every domain error."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  ... and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        return f"{self.message}\n{shown}{more}"


class InvalidInput(WanggeError):
    """The input is malformed or breaks a rule (422)."""


class UnknownCRS(InvalidInput):
    """A CRS that pyproj does not know, or none where one is required."""


class OutsideDistrict(InvalidInput):
    """A point or feature lies outside the district."""


class SwappedCoordinates(InvalidInput):
    """Latitude and longitude look swapped."""


class NotFound(WanggeError):
    """The thing asked for does not exist (404)."""


class Conflict(WanggeError):
    """The request clashes with the current state: a duplicate, an illegal transition (409)."""


class PayloadTooLarge(WanggeError):
    """More data than the declared limit (413)."""


class Forbidden(WanggeError):
    """The caller may not do this (403)."""


class Unauthenticated(WanggeError):
    """No valid credentials (401)."""


class DatabaseUnavailable(WanggeError):
    """The database cannot be reached right now (503)."""
