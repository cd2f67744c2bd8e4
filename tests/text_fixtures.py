"""Small CivilComments / MultiNLI files in their published layouts, written by the tests, and a counting encoder.

``CIVIL_ROWS`` is hand-checkable: the group counts the tests expect are derived in the comments below.
``HashEncoder`` (registered as text encoder ``"test-hash"``) embeds by hashing words, deterministically and
instantly, and counts every text it encodes, so tests can tell a cache hit from a re-encode.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from debiaslab.data.text_encoders import register_encoder

IDENTITIES = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
#: The WILDS file has more columns than the loader needs; keep a few so column lookup is by name, not position.
EXTRA = ("id", "created_date", "identity_any", "severe_toxicity", "obscene")

# (split, toxicity, {identity: fraction}, text). Training identity counts (>= 0.5): male 4, female 1, muslim 1,
# black 1, white 2, others 0, so rarest-first ranks are LGBTQ, christian, other_religions, female, muslim, black,
# white, male (ties in WILDS order).
CIVIL_ROWS: list[tuple[str, str, dict[str, float], str]] = [
    ("train", "0.0", {}, "what a lovely morning"),
    ("train", "0.0", {"female": 0.4}, "the bus was late again"),  # 0.4 < 0.5: no identity
    ("train", "0.1", {}, "I like this article"),
    ("train", "0.9", {}, "you are an idiot"),
    ("train", "0.5", {}, "shut up, moron"),  # 0.5 counts as toxic
    ("train", "0.2", {"male": 1.0}, "my father is a teacher"),
    ("train", "0.0", {"male": 0.6}, "he plays the guitar"),
    ("train", "0.7", {"male": 1.0}, "that man is a stupid fool"),
    ("train", "0.5", {"male": 1.0, "muslim": 0.8}, "muslim men are all idiots"),  # -> muslim (rarer than male)
    ("train", "0.1", {"black": 1.0, "white": 0.5}, "black and white neighbours"),  # -> black (rarer than white)
    ("train", "0.0", {"white": 1.0}, "white bread for breakfast"),
    ("train", "0.49", {"female": 1.0}, "she is a brilliant engineer"),  # 0.49: non-toxic
    ("val", "0.0", {}, "the weather is nice"),
    ("val", "0.6", {"christian": 1.0}, "christians are hypocrites"),
    ("val", "0.0", {"LGBTQ": 1.0, "male": 1.0}, "a gay man opened a bakery"),  # -> LGBTQ (count 0)
    ("test", "0.7", {}, "what a dumb take"),
    ("test", "0.0", {"other_religions": 0.9}, "the temple holds a festival"),
    ("test", "0.9", {"muslim": 1.0, "female": 1.0}, "muslim women are stupid"),  # tie 1-1 -> female (WILDS order)
    ("extra", "0.0", {}, "a row of another split"),  # skipped with a warning
]


def write_civilcomments(folder: Path, rows: Sequence[tuple[str, str, dict[str, float], str]] = CIVIL_ROWS) -> Path:
    """``folder/all_data_with_identities.csv`` as WILDS ships it: unnamed index column first, columns by name."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "all_data_with_identities.csv"
    header = ["", "id", "comment_text", "split", "created_date", "toxicity", *IDENTITIES, *EXTRA[2:]]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for i, (split, tox, idents, text) in enumerate(rows):
            ident_cells = [str(idents.get(c, 0.0)) for c in IDENTITIES]
            w.writerow([i, 1000 + i, text, split, "2017-01-01", tox, *ident_cells, "0", "0.0", "0.0"])
    return path


def synthetic_civil_rows(n: int, seed: int = 0) -> list[tuple[str, str, dict[str, float], str]]:
    """``n`` rows of a learnable toy toxicity task: toxic comments use insult words, identities are spurious."""
    rng = random.Random(seed)
    insults = ["idiot", "stupid", "moron", "pathetic", "disgusting", "dumb"]
    kind = ["lovely", "helpful", "thoughtful", "interesting", "kind", "wonderful"]
    who = {"male": "men", "female": "women", "muslim": "muslims", "christian": "christians", "black": "black people"}
    rows = []
    for i in range(n):
        split = "train" if i < n * 0.6 else ("val" if i < n * 0.8 else "test")
        toxic = rng.random() < 0.4
        ident = rng.choice(list(who)) if rng.random() < (0.7 if toxic else 0.3) else None
        word = rng.choice(insults if toxic else kind)
        subject = who[ident] if ident else rng.choice(["the article", "this idea", "the weather", "my neighbour"])
        text = f"{subject} is {word} number {i}"
        rows.append((split, "0.8" if toxic else "0.1", {ident: 1.0} if ident else {}, text))
    return rows


# ---------------------------------------------------------------------------------------------- MultiNLI
#: (premise, hypothesis, gold_label, has negation by GroupDRO's word rule)
NLI_PAIRS: list[tuple[str, str, str, bool]] = [
    ("A cat sits on the mat.", "There is no cat.", "contradiction", True),
    ("Everyone came to the party.", "Nobody came.", "contradiction", True),
    ("He sleeps every night.", "He never sleeps", "contradiction", True),
    ("The room was quiet.", "NOTHING happened!", "neutral", True),
    ("She fears the void.", "Nothingness is scary", "neutral", False),
    ("Everyone knows the answer.", "No-one knows", "contradiction", False),
    ("The dog is outside.", "The dog is not here", "entailment", False),
    ("I am unsure.", "I don't know", "entailment", False),
    ("He refused politely.", "Say no, please", "entailment", True),
    ("A man is walking.", "A person is knowing things", "neutral", False),
    ("Two kids play.", "Children are playing.", "entailment", False),
    ("A woman sings.", "Someone is singing.", "-", False),  # no consensus: dropped
]


def write_jsonl(path: Path, pairs: Sequence[tuple[str, str, str, bool]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for i, (p, h, label, _) in enumerate(pairs):
            rec = {"annotator_labels": [label], "genre": "fiction", "gold_label": label, "pairID": f"{i}e"}
            fh.write(json.dumps({**rec, "promptID": i, "sentence1": p, "sentence2": h}) + "\n")
    return path


def write_multinli(folder: Path, splits: dict[str, Sequence[tuple[str, str, str, bool]]] | None = None) -> Path:
    """The three MultiNLI 1.0 jsonl files (train, dev_matched, dev_mismatched) in ``folder``."""
    splits = splits or {"train": NLI_PAIRS, "val": NLI_PAIRS[:6], "test": NLI_PAIRS[6:]}
    names = {"train": "train", "val": "dev_matched", "test": "dev_mismatched"}
    for split, pairs in splits.items():
        write_jsonl(folder / f"multinli_1.0_{names[split]}.jsonl", pairs)
    return folder


def write_groupdro_metadata(
    folder: Path, splits: dict[str, Sequence[tuple[str, str, str, bool]]], seed: int = 0
) -> Path:
    """``metadata_random.csv`` as GroupDRO's generate_multinli.py writes it from these jsonl records: index over
    the concatenated records, '-' rows dropped, labels 0/1/2, random splits. Returns its path."""
    records = [r for s in ("train", "val", "test") for r in splits[s]]
    rng = random.Random(seed)
    path = folder / "metadata_random.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["", "gold_label", "sentence2_has_negation", "split"])
        for i, (_, _, label, neg) in enumerate(records):
            if label == "-":
                continue
            code = ("contradiction", "entailment", "neutral").index(label)
            w.writerow([i, code, int(neg), rng.choice([0, 0, 1, 2])])
    return path


# ---------------------------------------------------------------------------------------------- encoder
@register_encoder("test-hash")
class HashEncoder:
    """Bag of hashed words, 16-d, L2-normalised; ``HashEncoder.encoded`` counts texts encoded (all instances)."""

    name = "test-hash"
    dim = 16
    version = "1"
    encoded: ClassVar[int] = 0
    calls: ClassVar[int] = 0

    def __init__(self, device: str = "auto", batch_size: int = 128) -> None:
        self.device, self.batch_size = device, batch_size

    def identity(self) -> dict[str, Any]:
        return {"encoder": self.name, "version": HashEncoder.version, "dim": self.dim}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        HashEncoder.calls += 1
        HashEncoder.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def write_tiny_bert(folder: Path, words: Sequence[str]) -> Path:
    """A randomly initialised 2-layer, 32-wide BERT and a word-level vocabulary saved like a hub model."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w.lower() for w in words})]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 64})
    )
    AutoTokenizer.from_pretrained(str(folder), local_files_only=True).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(str(folder))
    return folder
