"""Activation memory: what one training forward keeps alive for backward.

``activation_bytes(model, tokens, targets)`` runs one training-mode forward under
``torch.autograd.graph.saved_tensors_hooks`` and adds up the bytes of every distinct
storage (deduplicated by data pointer) that autograd saves for backward, parameters
and buffers excluded. The figure depends on shapes and dtypes only, not on the device
or the allocator, and shows O(1) against O(L) memory directly:

- deq: the solver runs without a graph, only the final differentiable cell call saves;
- neural_ode with adjoint: odeint_adjoint saves the states at t0 and t1 only;
- checkpointed: torch.utils.checkpoint (non-reentrant) stores each segment's inputs
  through the hooks of the enclosing context (counted here), while the tensors inside a
  segment go to checkpoint's own inner hooks (not counted: they are recomputed in
  backward, never kept by the forward).

``peak_memory_bytes`` (CUDA only) is the growth of torch.cuda.max_memory_allocated over
one forward + backward, after a warm-up step so gradients are already allocated.

``python -m models.memory`` prints both for every strategy at depths 4, 8, 16, 32 on a
small transformer LM and checks the expected shapes of growth (PASS/FAIL lines); it
exits with status 1 if a check fails.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Optional

import torch
from torch import nn

DEPTHS = (4, 8, 16, 32)


def activation_bytes(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> int:
    """Bytes saved for backward by one training forward ``model(tokens, targets)``."""
    return measure_forward(model, tokens, targets)[0]


def measure_forward(model: nn.Module, tokens: torch.Tensor,
                    targets: torch.Tensor) -> tuple[int, dict[str, float]]:
    """(activation bytes, out.stats) of one training forward; the model's mode is restored."""
    static = {(t.device, t.untyped_storage().data_ptr())
              for t in [*model.parameters(), *model.buffers()]}
    saved: dict[tuple[torch.device, int], int] = {}
    alive: list[Any] = []  # hold storages so no address is reused while we count

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if key not in static and key not in saved:
            saved[key] = storage.nbytes()
            alive.append(storage)
        return tensor

    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(tokens, targets)
        stats = dict(getattr(out, "stats", {}))
        del out
    finally:
        model.train(was_training)
    return sum(saved.values()), stats


def peak_memory_bytes(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> Optional[int]:
    """CUDA: growth of max_memory_allocated over one training forward + backward; else None."""
    if tokens.device.type != "cuda":
        return None
    model.train()
    model(tokens, targets).loss.backward()  # warm-up: allocate gradients and workspaces
    model.zero_grad(set_to_none=False)
    torch.cuda.synchronize(tokens.device)
    torch.cuda.reset_peak_memory_stats(tokens.device)
    base = torch.cuda.memory_allocated(tokens.device)
    model(tokens, targets).loss.backward()
    torch.cuda.synchronize(tokens.device)
    peak = torch.cuda.max_memory_allocated(tokens.device) - base
    model.zero_grad(set_to_none=True)
    return int(peak)


def depth_options(kind: str, depth: int) -> dict[str, Any]:
    """Depth config giving ``depth`` cell evaluations (DEQ: max_iter, tol that never stops it)."""
    if kind == "deq":
        return {"kind": "deq", "max_iter": depth, "tol": 1e-12}
    if kind in ("neural_ode", "neural_ode_noadj"):
        return {"kind": "neural_ode", "method": "rk4", "steps": max(1, depth // 4),
                "adjoint": kind == "neural_ode"}
    return {"kind": kind, "layers": depth}


def measure(kinds: tuple[str, ...], depths: tuple[int, ...], device: torch.device, *, batch: int = 4,
            seq_len: int = 64, d_model: int = 128, vocab: int = 256) -> dict[str, dict[int, dict]]:
    """{kind: {depth: {"activation_bytes", "peak_mem_bytes", "nfe"}}} on a small transformer LM."""
    from models import build_model

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
    targets = torch.randint(0, vocab, (batch, seq_len), generator=gen).to(device)
    table: dict[str, dict[int, dict]] = {}
    for kind in kinds:
        table[kind] = {}
        for depth in depths:
            torch.manual_seed(0)
            model = build_model({"task": "lm", "vocab_size": vocab, "cell": "transformer",
                                 "d_model": d_model, "n_head": 4, "d_inner": 4 * d_model,
                                 "depth": depth_options(kind, depth)}).to(device)
            act, stats = measure_forward(model, tokens, targets)
            table[kind][depth] = {"activation_bytes": act, "nfe": stats["nfe"],
                                  "peak_mem_bytes": peak_memory_bytes(model, tokens, targets)}
    return table


def checks(table: dict[str, dict[int, dict]]) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) for the expected memory growth; depths must include 4, 8, 16, 32."""
    def act(kind: str, depth: int) -> int:
        return table[kind][depth]["activation_bytes"]

    def ratio(kind: str) -> float:
        return act(kind, 32) / act(kind, 4)

    def increment_ratio(kind: str) -> float:
        # growth beyond the depth-independent part: (b32 - b4) / (b8 - b4);
        # sqrt(L) predicts (sqrt 32 - 2) / (sqrt 8 - 2) = 4.4, linear 7, flat 0/0
        return (act(kind, 32) - act(kind, 4)) / max(1, act(kind, 8) - act(kind, 4))

    results = []
    for kind in ("deq", "neural_ode"):
        if kind in table:
            r = ratio(kind)
            results.append((f"{kind} flat in depth (32 vs 4 within 10%)", abs(r - 1) <= 0.10,
                            f"ratio {r:.3f}"))
    for kind in ("weight_tied", "explicit"):
        if kind in table:
            r = ratio(kind)
            results.append((f"{kind} linear in depth (32/4 close to 8)", 6.5 <= r <= 8.5, f"ratio {r:.2f}"))
    if "checkpointed" in table:
        r, inc = ratio("checkpointed"), increment_ratio("checkpointed")
        expected = (math.sqrt(32) - 2) / (math.sqrt(8) - 2)
        results.append(("checkpointed grows like sqrt(L) ((b32-b4)/(b8-b4) within 25% of "
                        f"{expected:.1f}; linear would be 7)", abs(inc / expected - 1) <= 0.25,
                        f"increment ratio {inc:.2f}, 32/4 ratio {r:.2f}"))
    if "deq" in table and "weight_tied" in table:
        frac = act("deq", 16) / act("weight_tied", 16)
        results.append(("deq at depth 16 <= 15% of weight_tied at 16 layers", frac <= 0.15,
                        f"{100 * frac:.1f}%"))
    return results


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=128)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    kinds = ("deq", "weight_tied", "checkpointed", "explicit", "neural_ode", "neural_ode_noadj")
    start = time.perf_counter()
    table = measure(kinds, DEPTHS, device, batch=args.batch, seq_len=args.seq_len, d_model=args.d_model)
    print(f"activation_bytes, transformer LM, B={args.batch} T={args.seq_len} d_model={args.d_model}, "
          f"device {device} (neural_ode: rk4 with depth/4 steps; neural_ode_noadj: without adjoint)")
    header = f"{'strategy':18s}" + "".join(f"{'depth ' + str(d):>16s}" for d in DEPTHS) + f"{'32/4':>8s}"
    for key, label in (("activation_bytes", "activation_bytes"), ("peak_mem_bytes", "peak_mem_bytes"),
                       ("nfe", "nfe (forward cell evaluations)")):
        if key == "peak_mem_bytes" and device.type != "cuda":
            print("peak_mem_bytes: CUDA only, skipped")
            continue
        print(f"\n{label}\n{header}")
        for kind, row in table.items():
            values = [row[d][key] for d in DEPTHS]
            cells = "".join(f"{v:>16,.0f}" for v in values)
            print(f"{kind:18s}{cells}{values[-1] / max(values[0], 1):>8.2f}")
    print()
    failed = 0
    for name, passed, detail in checks(table):
        failed += not passed
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")
    print(f"\n{time.perf_counter() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
