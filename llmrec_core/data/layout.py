"""Where each data stage reads and writes, under `data.root` (the same paths dvc.yaml declares)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataLayout:
    """Where each data stage writes under `data.root`: interim (ingest), validated, prepared, and quarantines."""

    root: Path

    @property
    def interim(self) -> Path:  # ingest output: contract rows with provenance
        return self.root / "interim"

    @property
    def validated(self) -> Path:  # validate output: rows that passed the GX suites
        return self.root / "validated"

    @property
    def prepared(self) -> Path:  # prepare output: indexed items, splits and the data settings
        return self.root / "prepared"

    def quarantine(self, stage: str) -> Path:
        return self.root / stage / "quarantine.parquet"
