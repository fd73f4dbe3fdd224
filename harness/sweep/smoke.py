"""``--smoke``: a job file's whole grid, shrunk to run in seconds on a laptop, through the real path.

Before booking a cluster, ``python -m harness.submit jobs/<file>.yaml --smoke`` runs every grid
point that still differs once shrunk (a depth sweep's depths and a sweep's model sizes shrink to
one model each; every strategy, task and option still runs) through the same path as the real
sweep: the data checks on the real corpora, DeepSpeed, Ray, the records and the report. The
shrinking is a list of ``--set`` items (:func:`smoke_overrides`), applied after the user's own
ones and printed, so what was changed is on record (``sweep.json``'s ``smoke`` list). The sweep is
named ``<name>-smoke``, so its records and report never mix with the real sweep's; every run's
spec says ``smoke: true`` and the report says its figures are not comparable.

What it cannot shrink (a corpus) is still checked, as in a real submit.
"""
from __future__ import annotations

import math
from typing import Any

import yaml

# train settings of a smoke run: a few steps, one periodic eval and checkpoint, the measurement
# window inside the run
TRAIN = {"steps": 6, "batch_size": 2, "eval_interval": 3, "checkpoint_interval": 3, "log_interval": 2,
         "eval_batches": 2, "test_batches": 2, "measure_warmup": 1, "measure_steps": 2, "warmup_steps": 1}
MODEL = {"d_model": 16, "n_head": 2, "d_inner": 32, "max_rel_distance": 32}
DATA = {"seq_len": 16, "blank_len": 6}
FIXED = {"pretrain_steps": 2, "pretrain_depth": 1}   # depth options set outright
SCALED = ("layers", "max_iter", "backward_max_iter", "steps")  # depth options shrunk (_small)
SUFFIX = "-smoke"


def _small(v: int) -> int:
    """Shrink a depth monotonically, so the grid points of a depth sweep stay distinct."""
    return v if v <= 4 else 4 + math.ceil(math.log2(v / 4))


def _depth_sets(prefix: str, depth: Any) -> list[str]:
    if not isinstance(depth, dict):
        return []
    sets = [f"{prefix}.{k}={_small(int(depth[k]))}" for k in SCALED if isinstance(depth.get(k), int)]
    return sets + [f"{prefix}.{k}={v}" for k, v in FIXED.items() if k in depth]


def _flow(value: Any) -> str:
    """A ``--set`` value as one line of YAML (JSON would write 1e-12, which YAML reads as text)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip()


def _without_sizes(depth: dict) -> dict:
    return {k: v for k, v in depth.items() if k not in SCALED and k not in ("tol", "backward_tol", "segments")}


def _case_model(case: dict) -> dict:
    """What a case trains once shrunk: its depth block without sizes and its other keys, less the
    label and the widths the smoke run sets anyway."""
    depth = case.get("model.depth")
    return {**{k: v for k, v in case.items() if k not in ("label", "model.depth", "seeds", "seed", "train.seed")
               and k.removeprefix("model.") not in MODEL},
            "model.depth": _without_sizes(depth) if isinstance(depth, dict) else depth}


SMALL_D_MODEL = 64  # a job whose widths are all at most this is left at its widths


def _already_small(model: dict, cases: list[dict]) -> bool:
    """True when every d_model the job sets (base and cases) is at most SMALL_D_MODEL: its
    widths cost the smoke run next to nothing, and shrinking them would undo the parameter
    matching the job file built (a one-cell model widened to an explicit stack's count)."""
    widths = [model.get("d_model")] + [c["model.d_model"] for c in cases if "model.d_model" in c]
    return all(isinstance(w, int) and not isinstance(w, bool) and w <= SMALL_D_MODEL for w in widths)


def _distinct(points: list, key) -> list:
    """The grid points that still differ once shrunk, the first of each."""
    seen, out = set(), []
    for point in points:
        k = yaml.safe_dump(key(_without_sizes(point) if isinstance(point, dict) and "kind" in point else point),
                           sort_keys=True)
        if k not in seen:
            seen.add(k)
            out.append(point)
    return out


def _resources(block: dict, everything: bool = False, cuda: bool = False) -> dict[str, Any]:
    """The smoke values of the ``resources.*`` keys of ``block`` (dotted keys; ``everything``:
    the three a smoke run always sets, present or not): one CPU per worker, one worker (two
    where the job asks for more, so data parallelism still runs), no GPU unless ``cuda``."""
    out: dict[str, Any] = {}
    if everything or "resources.gpus_per_worker" in block:
        if not cuda:
            out["resources.gpus_per_worker"] = 0
    if everything or "resources.cpus_per_worker" in block:
        out["resources.cpus_per_worker"] = 1
    if everything or "resources.workers" in block:
        workers = block.get("resources.workers", 1)
        out["resources.workers"] = 2 if isinstance(workers, int) and workers > 2 else 1
    return out


def smoke_overrides(raw: dict, cuda: bool = False) -> list[str]:
    """``--set`` items that shrink the job file ``raw`` (parsed, the user's overrides applied)
    to a smoke run: one seed, tiny sizes (widths kept where they are already tiny,
    :func:`_already_small`), a few steps, one worker per run (two where the job
    asks for more, so data parallelism still runs), no GPU unless ``cuda``."""
    grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
    cases = [c for c in grid.get("cases", []) if isinstance(c, dict)] if isinstance(grid.get("cases"), list) else []

    def everywhere(key: str) -> bool:  # set by the grid in every run: a --set of it is refused
        return key in grid or (bool(cases) and all(key in c for c in cases))

    model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    sets = [f"name={raw.get('name')}{SUFFIX}"]
    sets += [f"train.{k}={v}" for k, v in TRAIN.items() if not everywhere(f"train.{k}")]
    small = _already_small(model, cases)
    sets += [f"model.{k}={v}" for k, v in MODEL.items() if k in model and not everywhere(f"model.{k}") and not small]
    if not everywhere("model.depth"):
        sets += _depth_sets("model.depth", model.get("depth"))
    if isinstance(model.get("adaptive_softmax"), dict) and not everywhere("model.adaptive_softmax"):
        sets += ["model.adaptive_softmax.cutoffs=[50, 100, 200]", "model.adaptive_softmax.div_value=2.0"]
    sets += [f"data.{k}={v}" for k, v in DATA.items() if k in data and not everywhere(f"data.{k}")]
    resources = raw.get("resources") if isinstance(raw.get("resources"), dict) else {}
    sets += [f"{key}={value}" for key, value in _resources(
        {f"resources.{k}": v for k, v in resources.items()}, everything=True, cuda=cuda).items()
        if not everywhere(key)]
    if "seed" in grid:
        sets.append("grid.seed=[0]")
    depths = grid.get("model.depth") if isinstance(grid.get("model.depth"), list) else []
    kept = _distinct(depths, lambda d: d)
    if len(kept) < len(depths):
        sets.append(f"grid.model.depth={_flow(kept)}")
    for i, depth in enumerate(kept):
        sets += _depth_sets(f"grid.model.depth.{i}", depth)
    kept_cases = _distinct(cases, _case_model)
    if len(kept_cases) < len(cases):
        sets.append(f"grid.cases={_flow(kept_cases)}")
    for i, case in enumerate(kept_cases):  # what a case sets for itself is shrunk there
        sets += [f"grid.cases.{i}.{section}.{k}={v}" for section, values in (("model", {} if small else MODEL),
                                                                            ("train", TRAIN), ("data", DATA))
                 for k, v in values.items() if f"{section}.{k}" in case]
        sets += [f"grid.cases.{i}.{key}={value}" for key, value in _resources(case).items()]
        sets += _depth_sets(f"grid.cases.{i}.model.depth", case.get("model.depth"))
        if isinstance(case.get("seeds"), list) and len(case["seeds"]) > 1:
            sets.append(f"grid.cases.{i}.seeds=[{case['seeds'][0]}]")  # one seed, as grid.seed
    if isinstance(raw.get("compare"), dict) and raw["compare"].get("pairs"):
        sets.append("compare.pairs=[]")  # its pairs may name models the smoke run left out
    return sets
