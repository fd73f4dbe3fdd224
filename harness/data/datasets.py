"""The dataset registry: which files make a corpus directory and where the corpus comes from.

``DATASETS`` maps a name to a :class:`DatasetInfo`; :func:`register_dataset` adds one.
:func:`check_data_dir` is the gate every run passes before anything starts: it raises a
one-line :class:`DataError` naming the directory, the files expected and the public source.
No corpus is downloaded here (run-time machines may have no network); the user fetches it,
by hand or with ``python -m harness.data.fetch`` (``fetch.py``), which reads the ``archive_*``
fields: where the published archive lives, its SHA-256, and which of its members become
which split file.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .vocab import DataError

SPLITS = ("train", "valid", "test")
SYNTHETIC_META = "synthetic.json"
SYNTHETIC_CHAIN = "synthetic_chain.npz"


@dataclass(frozen=True)
class DatasetInfo:
    """A corpus layout: ``layouts`` are alternative (train, valid, test) file-name triples."""

    name: str
    layouts: tuple[tuple[str, str, str], ...]
    source: str
    kind: str = "text"  # "text": user-supplied files; "synthetic": generated on first use
    extra_files: tuple[str, ...] = field(default=())  # files that must sit next to the splits
    expected_vocab: int | None = None  # documented vocabulary size of the real corpus
    # Where ``python -m harness.data.fetch`` gets the corpus (all optional: None / () = not fetchable).
    archive_url: str | None = None
    archive_sha256: str | None = None  # of the archive file; None: not published, fetch wants --sha256
    archive_size: int | None = None  # bytes, where published
    archive_md5: str | None = None  # where only an MD5 is published: shown to whoever must check by hand
    # (path inside the archive, file name in ``layouts[0]``) for each split file to unpack
    archive_members: tuple[tuple[str, str], ...] = field(default=())
    default_dir: str | None = None  # the data_dir the shipped job files name (relative to where they run)


DATASETS: dict[str, DatasetInfo] = {}


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to ``DATASETS`` (a name may be registered once)."""
    if info.name in DATASETS:
        raise ValueError(f"dataset {info.name!r} is already registered")
    if info.kind not in ("text", "synthetic"):
        raise ValueError(f"dataset kind {info.kind!r} is not one of 'text', 'synthetic'")
    if info.archive_url is not None:
        targets = [name for _, name in info.archive_members]
        if sorted(targets) != sorted(info.layouts[0]):
            raise ValueError(f"dataset {info.name!r}: archive_members must unpack exactly "
                             f"{', '.join(info.layouts[0])}; got {', '.join(targets) or 'nothing'}")
    if info.archive_sha256 is not None and not _is_sha256(info.archive_sha256):
        raise ValueError(f"dataset {info.name!r}: archive_sha256 is not 64 hex digits")
    DATASETS[info.name] = info
    return info


def _members_under(folder: str, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(archive member, file name) pairs for files stored under ``folder`` in an archive."""
    return tuple((folder + name, name) for name in names)


register_dataset(DatasetInfo(
    name="wikitext103",
    layouts=(("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
             ("train.txt", "valid.txt", "test.txt")),
    source=("WikiText-103 word level (Merity et al. 2016): wikitext-103-v1.zip from "
            "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip "
            "(mirror: https://huggingface.co/datasets/Salesforce/wikitext, config wikitext-103-v1)"),
    expected_vocab=267_735,
    archive_url="https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
    # SHA-256 and size as published by Hugging Face datasets for this very URL:
    # github.com/huggingface/datasets, datasets/wikitext/dataset_infos.json, config
    # "wikitext-103-v1", "download_checksums" (num_bytes 190229076).
    archive_sha256="242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
    archive_size=190_229_076,
    archive_members=_members_under("wikitext-103/", ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")),
    default_dir="data/wikitext-103",  # jobs/wt103_sweep.yaml
))
register_dataset(DatasetInfo(
    name="ptb",
    layouts=(("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
             ("train.txt", "valid.txt", "test.txt")),
    source=("Penn Treebank, Mikolov's preprocessing: data/ptb.*.txt in "
            "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"),
    expected_vocab=10_000,
    archive_url="http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz",
    # No published SHA-256 of simple-examples.tgz was found, so fetch asks for --sha256.
    # What is published: its MD5, 30177ea32e27c525793142b6bf2c8e2d (PaddlePaddle,
    # paddle/dataset/imikolov.py, MD5 = ...), and its size, 34869662 bytes (the size the
    # public download scripts check, e.g. archive_size="34869662" / maybe_download(
    # 'simple-examples.tgz', 34869662)). Its members are stored as ./simple-examples/...
    archive_sha256=None,
    archive_size=34_869_662,
    archive_md5="30177ea32e27c525793142b6bf2c8e2d",
    archive_members=_members_under("simple-examples/data/", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")),
    default_dir="data/ptb",  # jobs/ptb_sweep.yaml
))
register_dataset(DatasetInfo(
    name="synthetic",
    layouts=(("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),),
    source=("generated by harness.data.synthetic (python -m harness.data.synthetic --out DIR), "
            "or automatically into a missing or empty data dir"),
    kind="synthetic",
    extra_files=(SYNTHETIC_META, SYNTHETIC_CHAIN),
))


def dataset_info(dataset: str) -> DatasetInfo:
    """The registered :class:`DatasetInfo`, or a DataError listing the known names."""
    try:
        return DATASETS[dataset]
    except (KeyError, TypeError):
        raise DataError(f"dataset {dataset!r} is unknown; choose one of {sorted(DATASETS)}") from None


def _expected_text(info: DatasetInfo) -> str:
    triples = [", ".join(layout + info.extra_files) for layout in info.layouts]
    return " or ".join(triples)


def _present(data_dir: Path, names: tuple[str, ...]) -> list[str]:
    return [name for name in names if (data_dir / name).is_file()]


def synthetic_state(data_dir: Path) -> str:
    """'absent' (nothing there: generate), 'complete', or 'partial' (refuse to touch it)."""
    info = DATASETS["synthetic"]
    names = info.layouts[0] + info.extra_files
    present = _present(data_dir, names) if data_dir.is_dir() else []
    if not present:
        return "absent"
    return "complete" if len(present) == len(names) else "partial"


def split_files(dataset: str, data_dir: str | Path) -> dict[str, Path]:
    """``{"train": path, "valid": path, "test": path}`` for the first complete layout."""
    info = dataset_info(dataset)
    data_dir = Path(data_dir)
    best: tuple[str, str, str] = info.layouts[0]
    best_present: list[str] = []
    for layout in info.layouts:
        present = _present(data_dir, layout + info.extra_files) if data_dir.is_dir() else []
        if len(present) == len(layout) + len(info.extra_files):
            return {split: data_dir / name for split, name in zip(SPLITS, layout)}
        if len(present) > len(best_present):
            best, best_present = layout, present
    where = f"data dir {str(data_dir)!r}"
    if not data_dir.exists():
        problem = "does not exist"
    elif not data_dir.is_dir():
        problem = "is not a directory"
    else:
        missing = [n for n in best + info.extra_files if n not in best_present]
        problem = f"is missing {', '.join(missing)}"
    fetch = (f"; or run: python -m harness.data.fetch {info.name} --dest {shlex.quote(str(data_dir))}"
             if info.archive_url is not None else "")
    raise DataError(f"{info.name}: {where} {problem}; expected {_expected_text(info)}; "
                    f"source: {info.source}{fetch}")


def check_data_dir(dataset: str, data_dir: str | Path) -> None:
    """Raise a one-line DataError unless ``data_dir`` holds a usable ``dataset`` corpus.

    For ``"synthetic"`` a missing or empty directory is fine (it is generated on load);
    one holding only some of the synthetic files is refused, so nothing is overwritten.
    """
    info = dataset_info(dataset)
    if data_dir is None or str(data_dir) == "":
        raise DataError(f"{info.name}: no data dir given; expected a folder with "
                        f"{_expected_text(info)}; source: {info.source}")
    data_dir = Path(data_dir)
    if info.kind == "synthetic":
        if data_dir.exists() and not data_dir.is_dir():
            split_files(dataset, data_dir)  # raises "is not a directory"
        if synthetic_state(data_dir) == "absent":
            return
    split_files(dataset, data_dir)


PROBE_BYTES = 1 << 16  # what probe_splits reads of each split: its head


def probe_splits(dataset: str, data_dir: str | Path) -> None:
    """Raise a one-line DataError naming the file if a split of a text corpus is empty or not
    UTF-8 in its first ``PROBE_BYTES``; cheap enough
    for every submit (three small reads), so a broken corpus is refused before anything starts
    rather than found by every run's workers. The workers still read every byte."""
    import codecs

    info = dataset_info(dataset)
    if info.kind != "text":
        return
    for split, path in split_files(dataset, data_dir).items():
        try:
            with open(path, "rb") as handle:
                head = handle.read(PROBE_BYTES)
                whole = not handle.read(1)
        except OSError as exc:
            raise DataError(f"cannot read corpus file {path}: {exc.strerror}") from None
        if not head:
            raise DataError(f"{split} split {path} is empty")
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)
        except UnicodeDecodeError as exc:
            raise DataError(f"corpus file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
