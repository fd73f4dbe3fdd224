"""A run's task on one worker: its data shard, its model, its batches and its evaluation.

Language modelling (``task: lm``) reads a corpus with ``harness.data.load_corpus`` and cuts
this rank's contiguous streams into ``seq_len`` windows; copy memory (``task: copy``)
generates sequences from the run's seed. Evaluation sums token NLL (and, for copy memory,
correct recalled digits) over this rank's shard and all-reduces the sums, so perplexity is
exact over the union of the ranks' shards: ``ppl = exp(sum NLL / tokens)``.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from harness.data import CopyMemory, LMBatches, load_corpus
from harness.data.copy_memory import CHANCE_ACC
from harness.run.measure import now
from harness.run.spec import RunSpec


class Workload:
    def __init__(self, spec: RunSpec, *, rank: int, world_size: int, device: torch.device):
        self.spec = spec
        self.task = spec.task
        self.data = spec.data
        self.train_cfg = spec.train
        self.rank, self.world_size, self.device = rank, world_size, device
        self.batch_size = int(self.train_cfg.batch_size)
        self.optimal_ppl: float | None = None
        self.unigram_ppl: float | None = None  # lm: the context-free reference (Corpus.unigram_ppl)
        self.chance_acc: float | None = None   # copy: a guesser's recall accuracy
        if self.task == "lm":
            corpus = load_corpus(self.data.dataset, self.data.data_dir, synthetic=self.data.synthetic_spec())
            self.vocab_size = len(corpus.vocab)
            self.optimal_ppl = corpus.optimal_ppl
            self.unigram_ppl = corpus.unigram_ppl("valid")
            self.splits = {name: getattr(corpus, name) for name in ("train", "valid", "test")}
            self.train_batches = self._lm_batches("train")
            self.tokens_per_batch = self.batch_size * int(self.data.seq_len)
        else:
            seed = int(self.train_cfg.seed)
            blank, digits = int(self.data.blank_len), int(self.data.n_digits)
            self.copy = {"train": CopyMemory(blank, n_digits=digits, seed=seed),
                         "valid": CopyMemory(blank, n_digits=digits, seed=10_000 + seed),
                         "test": CopyMemory(blank, n_digits=digits, seed=20_000 + seed)}
            self.vocab_size = self.copy["train"].vocab_size
            self.n_digits = digits
            self.chance_acc = CHANCE_ACC
            self.tokens_per_batch = self.batch_size * self.copy["train"].seq_len

    def _lm_batches(self, split: str) -> LMBatches:
        return LMBatches(self.splits[split], batch_size=self.batch_size, seq_len=int(self.data.seq_len),
                         rank=self.rank, world_size=self.world_size)

    def model_config(self):
        """The run's ``models.ModelConfig``, with the vocabulary of this run's data."""
        return self.spec.model_settings(self.vocab_size)

    def build_model(self) -> torch.nn.Module:
        from models import build_model

        return build_model(self.model_config())

    @property
    def depth_size(self) -> int | None:
        from models import depth_size

        return depth_size(self.spec.model.get("depth", {}))

    def train_batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of training step ``index`` (0-based): deterministic, so a resumed run
        continues where it stopped."""
        if self.task == "lm":
            inputs, targets = self.train_batches[index % len(self.train_batches)]
        else:
            inputs, targets = self.copy["train"].batch(self.batch_size, index, rank=self.rank,
                                                       world_size=self.world_size)
        return inputs.to(self.device), targets.to(self.device)

    def activation_bytes(self, module: torch.nn.Module) -> int:
        """Bytes saved for backward by one training forward (models.memory's definition)."""
        from models.memory import activation_bytes

        inputs, targets = self.train_batch(0)
        was_training = module.training
        module.train()
        try:
            return int(activation_bytes(module, inputs, targets))
        finally:
            module.train(was_training)

    @torch.no_grad()
    def _first_valid_inputs(self) -> torch.Tensor | None:
        """This rank's first validation batch; None when its shard of the split is empty."""
        if self.task == "lm":
            batches = self._lm_batches("valid")
            if len(batches) == 0:
                return None
            inputs, _ = batches[0]
        else:
            inputs, _ = self.copy["valid"].batch(self.batch_size, 0, rank=self.rank, world_size=self.world_size)
        return inputs.to(self.device)

    def spectral_radius(self, module) -> float | None:
        """Mean rho(J_f(z*)) over the first validation batch of this rank (None for a
        strategy without an equilibrium)."""
        if not module.has_equilibrium:
            return None  # the same on every rank: none of them joins the all-reduce
        inputs = self._first_valid_inputs()
        if inputs is None:  # every rank still joins the all-reduce; NaN: not measured
            return float("nan")
        return float(module.spectral_radius(inputs).float().mean())

    def analysis(self, module, *, step: int, source: str = "end of training") -> dict | None:
        """The equilibrium analysis (``DepthModel.analysis``) on the first validation batch,
        with the training step of the weights analysed and where they came from
        (``"end of training"``, or ``"checkpoint"`` for ``harness.analyze``)."""
        inputs = self._first_valid_inputs()
        result = None if inputs is None else module.analysis(inputs)
        if result is None:
            return None
        return {**result, "batch": "the first validation batch of rank 0", "step": int(step),
                "steps": int(self.train_cfg.steps), "source": source}

    def evaluate(self, engine, split: str, max_batches: int | None = None,
                 timings: list[float] | None = None) -> dict[str, float]:
        """Loss and perplexity (LM) or loss and recalled-digit accuracy (copy) on ``split``, and
        ``tokens``: how many target tokens (LM) or recalled digits (copy) they average over, all
        ranks together; ``timings`` (if given) receives each batch's forward time, device
        synchronised."""
        engine.eval()
        clock = _Clock(self.device, timings)
        nll = torch.zeros(3, dtype=torch.float64, device=self.device)  # nll, tokens, correct
        if self.task == "lm":
            batches = self._lm_batches(split)
            n = len(batches) if max_batches is None else min(max_batches, len(batches))
            for i in range(n):
                inputs, targets = batches[i]
                with clock:
                    out = engine(inputs.to(self.device), targets.to(self.device))
                nll[0] += float(out.nll_sum)
                nll[1] += float(out.n_tokens)
        else:
            n = max_batches or int(self.train_cfg.eval_batches)
            for i in range(n):
                inputs, targets = self.copy[split].batch(self.batch_size, i, rank=self.rank,
                                                         world_size=self.world_size)
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                with clock:
                    out = engine(inputs, targets)
                nll[0] += float(out.nll_sum)
                nll[1] += float(out.n_tokens)
                pred = out.logits[:, -self.n_digits:].argmax(-1)
                nll[2] += float((pred == targets[:, -self.n_digits:]).sum())
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            dist.all_reduce(nll)
        engine.train()
        loss = float(nll[0] / nll[1]) if nll[1] > 0 else float("nan")
        if self.task == "lm":
            return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"), "tokens": int(nll[1])}
        recalled = n * self.batch_size * self.n_digits * self.world_size
        return {"loss": loss, "acc": float(nll[2]) / recalled, "tokens": recalled}


class _Clock:
    """Times the block it wraps (device synchronised) into ``timings``; a no-op without it."""

    def __init__(self, device: torch.device, timings: list[float] | None) -> None:
        self.device, self.timings, self.t0 = device, timings, 0.0

    def __enter__(self) -> None:
        if self.timings is not None:
            self.t0 = now(self.device)

    def __exit__(self, *exc: object) -> None:
        if self.timings is not None and exc[0] is None:
            self.timings.append(now(self.device) - self.t0)
