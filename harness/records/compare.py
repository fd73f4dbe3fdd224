"""How a sweep's report judges its models, fixed before the data: a job file's ``compare:`` block.

The block is validated with the job file (``harness.sweep.config.JobFile``), stored in
``sweep.json`` under ``"compare"`` when the sweep is submitted (so the margin on record is
the one written before any run finished), and read back by the report
(``harness.report.verdicts``). A sweep recorded before the block existed reads as the
defaults below.

::

    compare:
      ppl_margin_pct: 2.0        # LM: "equal" only if the 90% interval of the difference in
                                 # val ppl lies inside +-2% of the baseline's val ppl
      acc_margin_pts: 2.0        # copy memory: inside +-2 points of recall
      param_tolerance_pct: 5.0   # "matched in parameters": non-embedding counts within 5%
      nfe_tolerance_pct: 25.0    # "matched in cell evaluations": forward nfe within 25%
      pairs:                     # optional: the pairs to judge, by model name (a run's name
        - {model: lm_deq12, baseline: lm_weight_tied12}   # without its seed label); without
                                 # it the report derives the pairs (docs/verdicts.md)
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not allowed: expected a number or a name, not a boolean")
        return value


class ComparePair(_Strict):
    """One pair to judge: ``model`` against ``baseline``, each a model name (a run's name
    without its seed label, as ``harness.report`` lists it)."""

    model: str = Field(min_length=1, max_length=200)
    baseline: str = Field(min_length=1, max_length=200)


class CompareSettings(_Strict):
    ppl_margin_pct: float = Field(2.0, gt=0, le=100,
                                  description="LM equivalence margin, % of the baseline's val ppl")
    acc_margin_pts: float = Field(2.0, gt=0, le=100,
                                  description="copy-memory equivalence margin, points of recall")
    param_tolerance_pct: float = Field(5.0, ge=0, le=100,
                                       description="non-embedding parameters within this % count as matched")
    nfe_tolerance_pct: float = Field(25.0, ge=0, le=1000,
                                     description="forward cell evaluations within this % count as matched")
    pairs: tuple[ComparePair, ...] = Field((), max_length=200)
    target_ppl: float | None = Field(None, gt=1, le=1e9, description="time to quality (LM): the validation "
                                     "perplexity a run must first reach")
    target_acc: float | None = Field(None, gt=0, le=1, description="time to quality (copy): the validation "
                                     "recall a run must first reach (a fraction)")


def read_compare(meta: dict) -> tuple[CompareSettings, str]:
    """The settings stored in a ``sweep.json`` (``meta``) and where they came from: ``"job file"``,
    ``"defaults"`` (a sweep recorded before the block existed) or a note on an unreadable block."""
    raw = meta.get("compare") if isinstance(meta, dict) else None
    if raw is None:
        return CompareSettings(), "defaults"
    try:
        return CompareSettings.model_validate(raw), "job file"
    except Exception as exc:  # a hand-edited sweep.json: the defaults, and the report says so
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return CompareSettings(), f"defaults (sweep.json's compare block is unreadable: {first})"


def model_name(run_name: str, seed: Any) -> str:
    """A run's name without its seed label (``lm_deq12_s3`` -> ``lm_deq12``): the name of the
    model the run trains, shared by its seeds; the name itself where no seed label is in it."""
    parts = str(run_name).split("_")
    label = f"s{seed}"
    if seed is None or label not in parts or len(parts) < 2:
        return str(run_name)
    i = len(parts) - 1 - parts[::-1].index(label)
    return "_".join(parts[:i] + parts[i + 1:])
