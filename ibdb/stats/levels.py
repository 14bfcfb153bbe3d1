"""The record of one finished level of a subset-simulation run (:mod:`ibdb.run.splitting`
writes them, the store keeps them as ``splitting_particles`` rows, and
:mod:`ibdb.stats.subset_simulation` estimates IB from them). NumPy only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ibdb.core.errors import EstimateError

__all__ = ["LevelRecord"]

_ROW_FIELDS = ("level", "index", "threshold", "rho", "loss", "fitted", "chain", "parent", "step",
               "accepted", "acceptance_rate", "n_evaluations")


@dataclass(frozen=True, eq=False)
class LevelRecord:
    """Everything stored about one finished level; with the run seed and dim it determines every
    particle's noise. Particle i (0-based, chain-major order) has ``losses[i]``, ``fitted[i]``,
    ``chain[i]`` (chain id within the level), ``parent[i]`` (index in the previous level of its
    chain's seed; -1 at level 0), ``step[i]`` (0 = the seed itself, t = after t pCN moves) and
    ``accepted[i]`` (whether move t was accepted; True at step 0). ``threshold`` is b_level: the
    particles lie in {L <= threshold, fit} (inf at level 0, where they are i.i.d.)."""

    level: int
    threshold: float
    rho: float
    losses: np.ndarray
    fitted: np.ndarray
    chain: np.ndarray
    parent: np.ndarray
    step: np.ndarray
    accepted: np.ndarray
    n_evaluations: int

    @property
    def n(self) -> int:
        return int(self.losses.size)

    @property
    def acceptance_rate(self) -> float:
        """Accepted moves / proposed moves (nan at level 0, where nothing moves)."""
        moved = self.step > 0
        return float(self.accepted[moved].mean()) if moved.any() else math.nan

    def same_as(self, other: LevelRecord) -> bool:
        """Bitwise equality of every stored field."""
        return all(
            np.array_equal(np.asarray(getattr(self, f)), np.asarray(getattr(other, f)))
            if f in ("losses", "fitted", "chain", "parent", "step", "accepted")
            else np.float64(getattr(self, f)).tobytes() == np.float64(getattr(other, f)).tobytes()
            for f in ("level", "threshold", "rho", "n_evaluations", "losses", "fitted", "chain",
                      "parent", "step", "accepted")
        )

    def to_rows(self) -> list[dict]:
        """One dict per particle with the fields in ``_ROW_FIELDS`` (level-wide ones repeated)."""
        rate = self.acceptance_rate
        return [
            {"level": self.level, "index": i, "threshold": self.threshold, "rho": self.rho,
             "loss": float(self.losses[i]), "fitted": bool(self.fitted[i]),
             "chain": int(self.chain[i]), "parent": int(self.parent[i]),
             "step": int(self.step[i]), "accepted": bool(self.accepted[i]),
             "acceptance_rate": rate, "n_evaluations": self.n_evaluations}
            for i in range(self.n)
        ]

    @staticmethod
    def from_rows(rows: Sequence[dict]) -> list[LevelRecord]:
        """Rebuild the records (sorted by level) from :meth:`to_rows`' rows, in any order."""
        by_level: dict[int, list[dict]] = {}
        for r in rows:
            by_level.setdefault(int(r["level"]), []).append(r)
        out = []
        for level in sorted(by_level):
            rs = sorted(by_level[level], key=lambda r: int(r["index"]))
            if [int(r["index"]) for r in rs] != list(range(len(rs))):
                raise EstimateError(
                    f"level {level}'s rows have indices that are not 0..{len(rs) - 1}; "
                    "rows are missing or duplicated: store every particle of a finished level."
                )

            def col(k: str, dt: type, rs: list[dict] = rs) -> np.ndarray:
                return np.array([r[k] for r in rs], dtype=dt)

            out.append(LevelRecord(
                level=level, threshold=float(rs[0]["threshold"]), rho=float(rs[0]["rho"]),
                losses=col("loss", np.float64), fitted=col("fitted", bool),
                chain=col("chain", np.int64), parent=col("parent", np.int64),
                step=col("step", np.int64), accepted=col("accepted", bool),
                n_evaluations=int(rs[0]["n_evaluations"])))
        return out
