"""The finding record shared by the engine, the rules, the reporters and the runtime checker."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any


class Confidence(enum.IntEnum):
    """How sure the static pass is that the gradient is wrong (see DESIGN.md)."""

    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def parse(cls, text: str) -> "Confidence":
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown confidence {text!r}: expected one of high, medium, low") from None

    def __str__(self) -> str:  # "high", as printed in every format
        return self.name.lower()


# slots: a big file's run holds a finding (and its related locations) per site, 135,000 for a
# generated 20 MB file; without a __dict__ each costs ~40 % less
@dataclasses.dataclass(frozen=True, slots=True)
class Related:
    path: str
    line: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line, "message": self.message}


@dataclasses.dataclass(slots=True)
class Finding:
    code: str
    slug: str
    path: str  # relative to the working directory when it lies under it
    line: int  # 1-based
    column: int  # 1-based
    end_line: int
    end_column: int
    message: str
    confidence: Confidence
    symbol: str = ""  # enclosing qualified name, e.g. "NoParallel._prepare_output_fn"
    related: list[Related] = dataclasses.field(default_factory=list)
    fix: dict[str, Any] | None = None
    runtime: dict[str, Any] | None = None  # {"verdict", "evidence"} once `confirm` ran

    def sort_key(self) -> tuple:
        return (self.path, self.line, self.column, self.code)

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "slug": self.slug,
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
            "message": self.message,
            "confidence": str(self.confidence),
            "symbol": self.symbol,
            "related": [r.to_json() for r in self.related],
            "fix": self.fix,
            "runtime": self.runtime,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Finding":
        return cls(
            code=data["code"],
            slug=data["slug"],
            path=data["path"],
            line=data["line"],
            column=data["column"],
            end_line=data["end_line"],
            end_column=data["end_column"],
            message=data["message"],
            confidence=Confidence.parse(data["confidence"]),
            symbol=data.get("symbol", ""),
            related=[Related(**r) for r in data.get("related", [])],
            fix=data.get("fix"),
            runtime=data.get("runtime"),
        )


@dataclasses.dataclass
class Report:
    """Everything one run produced; reporters render it, `confirm` annotates it."""

    findings: list[Finding]
    errors: list[dict[str, Any]]  # tool errors that are not findings: {"path", "message"}
    files_seen: int = 0
    files_parsed: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "findings": [f.to_json() for f in self.findings],
            "errors": list(self.errors),
            "stats": {
                "files_seen": self.files_seen,
                "files_parsed": self.files_parsed,
                "seconds": round(self.seconds, 4),
            },
        }
