"""The bad-record policy: every rejected input record is counted and reported with its file and record number.

``skip`` leaves the record out of the dataset and lists it in the report; ``fail`` stops at the first one with a
:class:`BadRecordError`. A record is never repaired or altered: a sequence is written exactly as read or not at all.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter

from data_pipeline.errors import BadRecordError

#: Kept in the JSON report per reason; the counts always cover every bad record.
MAX_LISTED_PER_REASON = 1000


class Policy(enum.StrEnum):
    SKIP = "skip"
    FAIL = "fail"


class Reason(enum.StrEnum):
    EMPTY_SEQUENCE = "empty_sequence"
    INVALID_CHARACTER = "invalid_character"
    DUPLICATE_ID = "duplicate_id"
    MAPPING_WITHOUT_SEQUENCE = "mapping_entry_without_sequence"
    MEMBER_WITHOUT_CLUSTER = "member_without_cluster"
    DUPLICATE_MAPPING = "member_in_several_clusters"


_ADVICE = {
    Reason.EMPTY_SEQUENCE: "remove the header or add its sequence",
    Reason.INVALID_CHARACTER: "fix or remove the record (unknown residues should be written as 'X')",
    Reason.DUPLICATE_ID: "give every record a unique id; the first occurrence is the one kept",
    Reason.MAPPING_WITHOUT_SEQUENCE: "add the member's sequence to the member FASTA or drop it from the mapping",
    Reason.MEMBER_WITHOUT_CLUSTER: "add the member to its UniRef50 cluster in the mapping TSV",
    Reason.DUPLICATE_MAPPING: "list each member in exactly one cluster; the first row is the one kept",
}


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """One rejected record: where it is (file, 1-based record or line number), its id and what is wrong."""

    reason: Reason
    path: str
    record: int
    record_id: str
    detail: str
    unit: str = "record"

    def describe(self) -> str:
        return (
            f"{self.path}, {self.unit} {self.record} ({self.record_id!r}): {self.reason.value}: {self.detail}. "
            f"To fix: {_ADVICE[self.reason]}, or pass --on-bad-record skip to leave such records out."
        )

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "reason": self.reason.value}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> BadRecord:
        return cls(**{**data, "reason": Reason(data["reason"])})


class BadRecordLog:
    """Collects bad records under a policy; reports each (file, record, reason) once however often it is seen."""

    def __init__(self, policy: Policy | str) -> None:
        self.policy = Policy(policy)
        self._seen: set[tuple[str, int, Reason]] = set()
        self.counts: Counter[str] = Counter()
        self.listed: list[BadRecord] = []

    def add(self, bad: BadRecord) -> None:
        """Record ``bad``; raises :class:`BadRecordError` under the ``fail`` policy."""
        if self.policy is Policy.FAIL:
            raise BadRecordError(bad.describe())
        key = (bad.path, bad.record, bad.reason)
        if key in self._seen:
            return
        self._seen.add(key)
        self.counts[bad.reason.value] += 1
        if self.counts[bad.reason.value] <= MAX_LISTED_PER_REASON:
            self.listed.append(bad)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict[str, object]:
        ordered = sorted(self.listed, key=lambda b: (b.path, b.record, b.reason.value))
        return {
            "policy": self.policy.value,
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "listed_per_reason_at_most": MAX_LISTED_PER_REASON,
            "records": [b.to_json() for b in ordered],
        }

    def summary(self) -> str:
        if not self.total:
            return "no bad records"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
        return f"{self.total} bad records skipped ({parts})"
