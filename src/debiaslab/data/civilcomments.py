"""CivilComments-WILDS: is an online comment toxic? The bias attribute is which identities the comment mentions.

Layout (the WILDS release, ``civilcomments_v1.0/``): ``all_data_with_identities.csv`` with an unnamed index
column and, among others, ``comment_text``, ``split`` (``train`` / ``val`` / ``test``; rows with other values are
skipped with a warning), ``toxicity`` (fraction of raters in [0, 1]) and the identity columns ``male, female,
LGBTQ, christian, muslim, other_religions, black, white`` (fractions; a blank cell counts as 0, as in WILDS).
Label = ``toxicity >= 0.5``; a comment mentions an identity when its column is ``>= 0.5``.

Two group definitions (option ``groups``):

- ``"wilds"``: the 8 identities (WILDS' 16 groups = 8 identities x 2 labels). A comment can mention several
  identities, but a :class:`GroupDataset` has one attribute per example: each comment gets the identity it
  mentions that is *rarest in the training split* (so a comment about e.g. a Muslim man counts towards the
  smaller group), and the extra attribute ``none`` when it mentions none. The per-group table thus has 9 x 2 = 18
  disjoint groups. WILDS' own evaluation is over *overlapping* groups (every comment mentioning an identity):
  each split keeps the multi-hot identity memberships, and
  :meth:`~debiaslab.data.overlap.OverlappingGroupDataset.overlapping_accuracy` computes it, worst group included.
- ``"any_identity"``: 2 attributes, mentions any of the 8 identities or none (4 groups), as JTT and DFR train
  with. Bias-aligned groups: (non-toxic, no identity) and (toxic, identity).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.text_corpus import SPLITS, TextCorpus, TextSplit, csv_rows, find_file, parse_fraction
from debiaslab.data.text_features import TextOptions, build_text_bundle
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "civilcomments"
FORMAT_VERSION = 1
FILE = "all_data_with_identities.csv"
#: WILDS' identity columns, in WILDS' order.
IDENTITIES: tuple[str, ...] = ("male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white")
TEXT, LABEL, SPLIT = "comment_text", "toxicity", "split"
GROUPINGS: tuple[str, ...] = ("wilds", "any_identity")
CLASS_NAMES = ["non-toxic", "toxic"]
THRESHOLD = 0.5


def locate(data_root: Path, path: str | None) -> Path:
    """The CSV: ``path`` (the file or its folder), else ``<root>/civilcomments_v1.0``, ``<root>/civilcomments``,
    ``<root>``."""
    if path is not None:
        p = Path(path).expanduser()
        return p if p.suffix == ".csv" else find_file(FILE, [p], "CivilComments")
    root = Path(data_root)
    return find_file(FILE, [root / "civilcomments_v1.0", root / "civilcomments", root], "CivilComments")


def read_rows(csv_path: Path) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per split: comments, toxicity labels (int64) and identity memberships ``(N, 8)`` bool."""
    columns, rows = csv_rows(csv_path, [TEXT, SPLIT, LABEL, *IDENTITIES])
    text_i, split_i, label_i = columns[TEXT], columns[SPLIT], columns[LABEL]
    ident_i = [columns[c] for c in IDENTITIES]
    texts: dict[str, list[str]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    members: dict[str, list[list[bool]]] = {s: [] for s in SPLITS}
    skipped: Counter[str] = Counter()
    for number, cells in rows:
        split = cells[split_i].strip()
        if split not in texts:
            skipped[split] += 1
            continue
        tox = parse_fraction(cells[label_i], LABEL, csv_path, number)
        texts[split].append(cells[text_i])
        labels[split].append(int(tox >= THRESHOLD))
        members[split].append(
            [parse_fraction(cells[i], c, csv_path, number, empty=0.0) >= THRESHOLD for i, c in zip(ident_i, IDENTITIES)]
        )
    if skipped:
        what = ", ".join(f"{v!r} ({n} rows)" for v, n in sorted(skipped.items()))
        log.warning("%s: skipped rows whose split is not train/val/test: %s", csv_path, what)
    return {
        s: (
            texts[s],
            np.asarray(labels[s], dtype=np.int64),
            np.asarray(members[s], dtype=bool).reshape(-1, len(IDENTITIES)),
        )
        for s in SPLITS
    }


def assign_identity(memberships: np.ndarray, train_counts: np.ndarray) -> np.ndarray:
    """One attribute per comment: the mentioned identity rarest in training (ties: WILDS order), else 8 (none)."""
    rank = np.empty(len(IDENTITIES), dtype=np.int64)
    rank[np.argsort(train_counts, kind="stable")] = np.arange(len(IDENTITIES))
    keyed = np.where(memberships, rank[None, :], len(IDENTITIES))
    chosen = np.argmin(keyed, axis=1)
    return np.where(memberships.any(axis=1), chosen, len(IDENTITIES)).astype(np.int64)


def read_civilcomments(csv_path: Path, groups: str = "wilds") -> TextCorpus:
    """Parse the WILDS CSV into a corpus with the chosen group definition (see the module docstring)."""
    if groups not in GROUPINGS:
        raise ConfigError(
            f"unknown CivilComments groups {groups!r}; expected one of: {', '.join(GROUPINGS)} "
            "(wilds: 8 identities x 2 labels as in WILDS; any_identity: any identity mentioned x 2 labels, "
            "4 groups as in JTT/DFR)"
        )
    parsed = read_rows(csv_path)
    train_counts = parsed["train"][2].sum(axis=0)
    splits = {}
    for name, (texts, y, members) in parsed.items():
        wilds = groups == "wilds"
        attr = assign_identity(members, train_counts) if wilds else members.any(axis=1).astype(np.int64)
        splits[name] = TextSplit(texts=(texts,), y=y, attr=attr, memberships=members)
    if groups == "wilds":
        attr_names, aligned = [*IDENTITIES, "none"], []
        notes = [
            "CivilComments groups='wilds': the group table assigns each comment ONE identity (the one it mentions "
            "that is rarest in training; 'none' if it mentions none), so its 18 groups are disjoint. WILDS' "
            "worst-group accuracy is over overlapping groups (every comment mentioning an identity): compute it "
            "with the split's overlapping_accuracy(logits) (debiaslab.data.overlap)."
        ]
    else:
        attr_names, aligned, notes = ["no identity", "identity"], [0, 3], []
    return TextCorpus(
        name=NAME,
        splits=splits,
        n_classes=2,
        n_attrs=len(attr_names),
        class_names=list(CLASS_NAMES),
        attr_names=attr_names,
        text_fields=(TEXT,),
        aligned_groups=aligned,
        membership_names=list(IDENTITIES),
        recipe={
            "dataset": NAME,
            "format_version": FORMAT_VERSION,
            "file": str(csv_path),
            "groups": groups,
            "label": f"{LABEL} >= {THRESHOLD}",
            "identities": list(IDENTITIES),
            "identity_train_counts": train_counts.tolist(),
        },
        notes=notes,
    )


@register_dataset(NAME)
def build_civilcomments(
    data_root: Path,
    cache_dir: Path,
    *,
    groups: str = "wilds",
    encoder: str = "minilm",
    tokenizer: str | None = None,
    max_length: int = 300,
    path: str | None = None,
    encode_device: str = "auto",
    encode_batch_size: int = 128,
) -> DatasetBundle:
    """CivilComments-WILDS (toxicity; identities mentioned): groups = wilds (8 identities) or any_identity.

    ``encoder="minilm"`` embeds the comments with frozen all-MiniLM-L6-v2 (cached); ``encoder="tokens"`` with
    ``tokenizer=<model dir>`` makes token ids (``max_length``, 300 as in WILDS) for fine-tuning that model.
    ``path`` points at the CSV (or its folder) when it is not under the data root.
    """
    options = TextOptions(encoder, tokenizer, max_length, encode_device, encode_batch_size)
    corpus = read_civilcomments(locate(data_root, path), groups)
    return build_text_bundle(corpus, cache_dir, options)
