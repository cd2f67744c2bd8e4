"""MultiNLI: does the premise entail, contradict or say nothing about the hypothesis? Bias: negation words.

Classes (GroupDRO's ids): 0 contradiction, 1 entailment, 2 neutral. Attribute: 1 when the hypothesis contains
a negation word (no, never, nothing, nobody) as a whole word, 0 otherwise: 6 groups. Words are found as
GroupDRO does: ASCII punctuation removed, lower-cased, split on whitespace (so "No." and "NOBODY" count,
"nothingness" and "no-one" do not). Bias-aligned groups: (contradiction, negation), (entailment, no negation),
(neutral, no negation).

Two layouts (option ``layout``; ``auto`` picks ``groupdro`` when the metadata file is found):

- ``groupdro`` (GroupDRO / JTT): ``metadata_random.csv`` with an unnamed index column, ``gold_label`` (0/1/2),
  ``sentence2_has_negation`` (0/1) and ``split`` (0 train, 1 val, 2 test), as written by GroupDRO's
  ``generate_multinli.py``. Labels, attributes and splits come from it; the texts come from the three MultiNLI
  jsonl files, whose records concatenated (train, dev_matched, dev_mismatched) are what the index counts. Each
  row's label is checked against its jsonl record, so metadata made from other files is caught.
- ``jsonl`` (the MultiNLI 1.0 release): ``multinli_1.0_train.jsonl`` (train), ``..._dev_matched.jsonl`` (val),
  ``..._dev_mismatched.jsonl`` (test) with ``sentence1`` (premise), ``sentence2`` (hypothesis) and
  ``gold_label``; pairs without a consensus label (``-``) are dropped, as GroupDRO does; the attribute is
  computed from the hypothesis.
"""

from __future__ import annotations

import json
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.text_corpus import SPLITS, TextCorpus, TextSplit, csv_rows, find_file, parse_choice
from debiaslab.data.text_features import TextOptions, build_text_bundle
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NAME = "multinli"
FORMAT_VERSION = 1
LABELS: tuple[str, ...] = ("contradiction", "entailment", "neutral")
NO_CONSENSUS = "-"
NEGATION_WORDS = frozenset({"no", "never", "nothing", "nobody"})
JSONL: dict[str, str] = {
    "train": "multinli_1.0_train.jsonl",
    "val": "multinli_1.0_dev_matched.jsonl",
    "test": "multinli_1.0_dev_mismatched.jsonl",
}
METADATA = "metadata_random.csv"
META_COLUMNS = ("gold_label", "sentence2_has_negation", "split")
LAYOUTS: tuple[str, ...] = ("auto", "groupdro", "jsonl")
ATTR_NAMES = ["no negation", "negation"]
ALIGNED = [0 * 2 + 1, 1 * 2 + 0, 2 * 2 + 0]
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def has_negation(hypothesis: str) -> bool:
    """True when a negation word occurs as a whole word (punctuation stripped, case-insensitive)."""
    return any(w in NEGATION_WORDS for w in hypothesis.translate(_PUNCTUATION).lower().split())


@dataclass
class Records:
    """Records of jsonl files in order, with where each came from (for error messages)."""

    premise: list[str] = field(default_factory=list)
    hypothesis: list[str] = field(default_factory=list)
    label: list[str] = field(default_factory=list)
    origin: list[tuple[str, int]] = field(default_factory=list)


def read_jsonl(path: Path, into: Records | None = None) -> Records:
    """Append the records of one MultiNLI jsonl file (one JSON object per non-blank line) to ``into``."""
    out = into if into is not None else Records()
    if not path.is_file():
        raise DataError(f"{path} not found")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg})") from exc
            for key in ("sentence1", "sentence2", "gold_label"):
                if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
                    raise DataError(f"{path}: line {number} has no text field {key!r}")
            label = obj["gold_label"]
            if label not in LABELS and label != NO_CONSENSUS:
                raise DataError(
                    f"{path}: line {number}: gold_label {label!r} is not one of the declared classes "
                    f"{', '.join(LABELS)} (or {NO_CONSENSUS!r}, no consensus)"
                )
            out.premise.append(obj["sentence1"])
            out.hypothesis.append(obj["sentence2"])
            out.label.append(label)
            out.origin.append((path.name, number))
    return out


def folders(data_root: Path, path: str | None) -> list[Path]:
    if path is not None:
        return [Path(path).expanduser()]
    root = Path(data_root)
    return [root / "multinli" / "data", root / "multinli", root / "multinli" / "multinli_1.0", root / "multinli_1.0"]


def _split(premise: list[str], hypothesis: list[str], y: list[int], attr: list[int]) -> TextSplit:
    return TextSplit(texts=(premise, hypothesis), y=np.asarray(y), attr=np.asarray(attr))


def read_multinli_jsonl(where: list[Path]) -> TextCorpus:
    """The release's three jsonl files as train / val / test; attribute computed from the hypothesis."""
    splits, files, dropped = {}, {}, {}
    for split, name in JSONL.items():
        file = find_file(name, where, "MultiNLI")
        rec = read_jsonl(file)
        keep = [i for i, lab in enumerate(rec.label) if lab != NO_CONSENSUS]
        dropped[split] = len(rec.label) - len(keep)
        splits[split] = _split(
            [rec.premise[i] for i in keep],
            [rec.hypothesis[i] for i in keep],
            [LABELS.index(rec.label[i]) for i in keep],
            [int(has_negation(rec.hypothesis[i])) for i in keep],
        )
        files[split] = str(file)
    log.debug("MultiNLI: dropped pairs without a consensus label: %s", dropped)
    return _corpus(splits, {"layout": "jsonl", "files": files, "dropped_no_consensus": dropped})


def read_multinli_groupdro(metadata: Path, where: list[Path]) -> TextCorpus:
    """GroupDRO's metadata (labels, attributes, splits) joined by index with the jsonl texts."""
    rec = Records()
    files = {}
    for split, name in JSONL.items():
        files[split] = str(find_file(name, where, "MultiNLI (texts for the GroupDRO metadata)"))
        read_jsonl(Path(files[split]), rec)
    columns, rows = csv_rows(metadata, META_COLUMNS)
    if min(columns[c] for c in META_COLUMNS) == 0:
        raise DataError(f"{metadata} has no index column (an unnamed first column, as GroupDRO writes it)")
    out: dict[int, tuple[list[str], list[str], list[int], list[int]]] = {s: ([], [], [], []) for s in range(3)}
    disagree = 0
    codes = {"0": 0, "1": 1, "2": 2}
    for number, cells in rows:
        try:
            index = int(cells[0])
        except ValueError:
            raise DataError(f"{metadata}: row {number}: index {cells[0]!r} is not an integer") from None
        if not 0 <= index < len(rec.label):
            raise DataError(
                f"{metadata}: row {number}: index {index} is outside the {len(rec.label)} records of the "
                f"three MultiNLI jsonl files"
            )
        y = parse_choice(cells[columns["gold_label"]], "gold_label", metadata, number, codes)
        a = parse_choice(cells[columns["sentence2_has_negation"]], "sentence2_has_negation", metadata, number, codes)
        if a > 1:
            raise DataError(f"{metadata}: row {number}: sentence2_has_negation {a} is not 0 or 1")
        s = parse_choice(cells[columns["split"]], "split", metadata, number, codes)
        if rec.label[index] != LABELS[y]:
            file, line = rec.origin[index]
            raise DataError(
                f"{metadata}: row {number}: gold_label {y} ({LABELS[y]}) but record {index} ({file} line {line}) "
                f"is {rec.label[index]!r}; the metadata was not made from these jsonl files"
            )
        disagree += a != has_negation(rec.hypothesis[index])
        for column, value in zip(out[s], (rec.premise[index], rec.hypothesis[index], y, a)):
            column.append(value)
    if disagree:
        log.info("%s: %d rows' sentence2_has_negation differs from the words of the hypothesis", metadata, disagree)
    splits = {name: _split(*out[i]) for i, name in enumerate(SPLITS)}
    return _corpus(splits, {"layout": "groupdro", "metadata": str(metadata), "files": files})


def _corpus(splits: dict[str, TextSplit], recipe: dict[str, object]) -> TextCorpus:
    return TextCorpus(
        name=NAME,
        splits=splits,
        n_classes=len(LABELS),
        n_attrs=2,
        class_names=list(LABELS),
        attr_names=list(ATTR_NAMES),
        text_fields=("premise", "hypothesis"),
        aligned_groups=list(ALIGNED),
        recipe={
            "dataset": NAME,
            "format_version": FORMAT_VERSION,
            **recipe,
            "negation_words": sorted(NEGATION_WORDS),
        },
    )


def read_multinli(
    data_root: Path, layout: str = "auto", metadata: str = METADATA, path: str | None = None
) -> TextCorpus:
    """Read MultiNLI in the given layout (``auto``: GroupDRO's when its metadata file is found)."""
    if layout not in LAYOUTS:
        raise ConfigError(
            f"unknown MultiNLI layout {layout!r}; expected one of: {', '.join(LAYOUTS)} "
            f"(groupdro: {METADATA} plus the jsonl texts; jsonl: the MultiNLI 1.0 release files)"
        )
    where = folders(data_root, path)
    meta = next((f / metadata for f in where if (f / metadata).is_file()), None)
    if layout == "groupdro" or (layout == "auto" and meta is not None):
        return read_multinli_groupdro(meta or find_file(metadata, where, "MultiNLI (GroupDRO layout)"), where)
    return read_multinli_jsonl(where)


@register_dataset(NAME)
def build_multinli(
    data_root: Path,
    cache_dir: Path,
    *,
    layout: str = "auto",
    metadata: str = METADATA,
    encoder: str = "minilm",
    tokenizer: str | None = None,
    max_length: int = 128,
    path: str | None = None,
    encode_device: str = "auto",
    encode_batch_size: int = 128,
) -> DatasetBundle:
    """MultiNLI (3 classes; negation word in the hypothesis): GroupDRO metadata or the raw jsonl release.

    ``encoder="minilm"`` embeds premise u and hypothesis v with frozen all-MiniLM-L6-v2 and feeds
    ``[u, v, |u-v|, u*v]``; ``encoder="tokens"`` with ``tokenizer=<model dir>`` makes pair token ids
    (``max_length`` 128, as GroupDRO) for fine-tuning. ``path`` is the folder holding the files.
    """
    options = TextOptions(encoder, tokenizer, max_length, encode_device, encode_batch_size)
    corpus = read_multinli(data_root, layout, metadata, path)
    return build_text_bundle(corpus, cache_dir, options)
