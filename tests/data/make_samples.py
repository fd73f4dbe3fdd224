"""Regenerate the tiny sample corpora in tests/data/ (made-up text, standard file formats).

    .venv/bin/python tests/data/make_samples.py

wikitext103/wiki.{train,valid,test}.tokens imitate WikiText-103's layout: a blank line
(" ") between paragraphs, " = Title = " and " = = Section = = " heading lines, @-@ / @,@ /
@.@ split tokens, <unk>. ptb/ptb.{train,valid,test}.txt imitate Mikolov's PTB: lower
case, numbers as N, <unk>, one sentence per line. Valid/test deliberately contain a few
words absent from train (the real corpora do not) so out-of-vocabulary mapping is tested.
"""
from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOUNS = ("game river city album song army battle station bridge church player season team "
         "road castle island ship species film railway tower school village storm").split()
VERBS = "was became released built named played moved reached founded opened described recorded".split()
ADJ = "first large northern new early short main final former local major second".split()
NAMES = "Valkyria Arden Morrow Kestrel Hollins Tarquin Elsby Marwood Quenby Sato Übermann Łukasz".split()
FILLER = "the of and in to a , . was by for on with as at from".split()
RARE = ("zygote quasar nimbus ferrule gabion", "obelisk plinth scarp runnel")  # valid-only, test-only


def wiki_sentence(rng: random.Random, extra: tuple[str, ...] = ()) -> list[str]:
    words = [rng.choice(NAMES), rng.choice(VERBS), "the", rng.choice(ADJ), rng.choice(NOUNS)]
    for _ in range(rng.randint(4, 14)):
        roll = rng.random()
        if roll < 0.08:
            words += [str(rng.randint(1, 9)), "@,@", f"{rng.randint(0, 999):03d}"]
        elif roll < 0.14:
            words += [str(rng.randint(1, 99)), "@.@", str(rng.randint(0, 9))]
        elif roll < 0.22:
            words += [rng.choice(ADJ), "@-@", rng.choice(NOUNS)]
        elif roll < 0.27:
            words.append("<unk>")
        elif roll < 0.31 and extra:
            words.append(rng.choice(extra))
        elif roll < 0.6:
            words.append(rng.choice(FILLER))
        else:
            words.append(rng.choice(NOUNS + NAMES))
    return words + ["."]


def wiki_text(rng: random.Random, n_articles: int, extra: tuple[str, ...] = ()) -> str:
    lines = []
    for _ in range(n_articles):
        lines += [" ", f" = {rng.choice(NAMES)} {rng.choice(NOUNS).title()} = ", " "]
        for _section in range(rng.randint(1, 3)):
            lines += [f" = = {rng.choice(ADJ).title()} {rng.choice(NOUNS)} = = ", " "]
            for _paragraph in range(rng.randint(1, 4)):
                words = sum((wiki_sentence(rng, extra) for _ in range(rng.randint(1, 4))), [])
                lines += [" " + " ".join(words) + " ", " "]
    return "\n".join(lines) + "\n"


def ptb_text(rng: random.Random, n_lines: int, extra: tuple[str, ...] = ()) -> str:
    vocab = [w.lower() for w in NOUNS + VERBS + ADJ + NAMES] + ["the", "of", "a", "to", "in", "and", "'s", "n't"]
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(3, 25)):
            roll = rng.random()
            words.append("N" if roll < 0.08 else "<unk>" if roll < 0.13 else
                         rng.choice(extra) if roll < 0.16 and extra else rng.choice(vocab))
        lines.append(" " + " ".join(words) + " ")
    return "\n".join(lines) + "\n"


def main() -> None:
    valid_extra, test_extra = (tuple(s.split()) for s in RARE)
    wiki, ptb = HERE / "wikitext103", HERE / "ptb"
    wiki.mkdir(exist_ok=True)
    ptb.mkdir(exist_ok=True)
    for split, n, extra in (("train", 20, ()), ("valid", 4, valid_extra), ("test", 4, test_extra)):
        rng = random.Random(f"wiki-{split}")
        (wiki / f"wiki.{split}.tokens").write_text(wiki_text(rng, n, extra), encoding="utf-8")
    for split, n, extra in (("train", 300, ()), ("valid", 60, valid_extra), ("test", 60, test_extra)):
        rng = random.Random(f"ptb-{split}")
        (ptb / f"ptb.{split}.txt").write_text(ptb_text(rng, n, extra), encoding="utf-8")


if __name__ == "__main__":
    main()
