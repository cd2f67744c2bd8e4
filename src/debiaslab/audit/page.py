"""The audit page: Markdown around the figures, written from the audit's facts (``audit.json``) alone."""

from __future__ import annotations

import math
from typing import Any

METRICS = (
    ("accuracy", "accuracy"),
    ("worst_group", "worst group"),
    ("unbiased", "unbiased (mean over groups)"),
    ("aligned", "majority groups"),
    ("conflicting", "minority groups"),
)


def pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * float(value):.1f}"


def audit_markdown(facts: dict[str, Any]) -> str:
    """The whole page (figure links are relative: the page sits beside its PNGs)."""
    parts = [_header(facts), _summary(facts)]
    figs = facts.get("figures", {})
    n_classes = len(facts["groups"]["counts"]["train"])
    if facts.get("classes_drawn", n_classes) < n_classes:
        parts.append(
            f"The figures show classes 0 to {facts['classes_drawn'] - 1} of {n_classes}; `audit.json` has every "
            "class.\n"
        )
    parts.append(_groups(facts, figs))
    if "examples" in figs:
        parts.append(
            "## Hardest and easiest training images for the biased reference\n\n"
            "Per class (rows), the training images with the highest loss under the biased reference (left: what "
            "it gets most wrong, where the minority should be) and the lowest (right: its prototypes of the class, "
            "where the shortcut shows); a red frame marks a minority example.\n\n"
            f"![hardest and easiest]({figs['examples']})\n"
        )
    parts.append(_saliency(facts, figs))
    parts.append(_accuracy(facts, figs))
    parts.append(_health(facts))
    return "\n".join(parts)


def _header(facts: dict[str, Any]) -> str:
    s = facts["subject"]
    opts = ", ".join(f"{k}={v}" for k, v in sorted(s["dataset_options"].items())) or "default options"
    ref = facts["reference"]
    settings = ref.get("settings", {})
    model = settings.get("model", "?") + (f" {settings['model_kwargs']}" if settings.get("model_kwargs") else "")
    if "epochs" in settings:
        ref_line = (
            f"{ref['source']}: {model}, {settings['epochs']} epoch(s) of ERM, {settings['optimizer']} at lr "
            f"{settings['lr']:g}, weight decay {settings['weight_decay']:g}, batch {settings['batch_size']}, seed "
            f"{settings['seed']} ({settings['time_s']:.1f} s)"
        )
    else:
        ref_line = f"{ref['source']}: {model}, seed {settings.get('seed')} (every setting in `audit.json`)"
    if "run" in s:
        title = f"# Audit of `{s['run']}`: {s['method']} on {s['dataset']}\n"
        selected = s.get("selected") or {}
        epochs = " + ".join(str(e) for e in s.get("epochs") or [])
        run_line = (
            f"- Run: method `{s['method']}`, model `{s['model']}`, seed {s['seed']}, {epochs} epoch(s); deployed: "
            f"epoch {selected.get('epoch')} of stage `{selected.get('stage')}`, selected by `{s['selection']}`\n"
        )
    else:
        title = f"# Audit of dataset {s['dataset']}\n"
        run_line = "- No run audited: the page shows the dataset and its biased reference only\n"
    return (
        f"{title}\n- Dataset: `{s['dataset']}` ({opts}; protocol {s['protocol']})\n{run_line}"
        f"- Biased reference: {ref_line}\n"
        f"- Written by `debiaslab audit` in {facts.get('time_s', 0):.0f} s (reference training included)\n"
    )


def _summary(facts: dict[str, Any]) -> str:
    g, e = facts["groups"], facts["reference_errors"]
    n = sum(map(sum, g["counts"]["train"]))
    minority = f"{g['minority_train']} ({pct(g['minority_train'] / max(n, 1))} %)"
    lines = ["## At a glance\n"]
    if g["source"] == "attributes":
        lines.append(f"- Training set: {n} examples; {minority} are in minority (bias-conflicting) groups")
    else:
        lines.append(f"- Training set: {n} examples; groups: the {g['label']}; {minority} in minority groups")
    lines.append(
        f"- Reference: wrong on {e['n_wrong']} of {e['n']} training examples ({pct(e['n_wrong'] / max(e['n'], 1))} %)"
    )
    for label, q in facts.get("inference_quality", {}).items():
        lines.append(
            f"- Groups inferred by the {label}, scored against the attributes: a minority of {q['minority']}, "
            f"{pct(q['precision'])} % of it bias-conflicting (precision), holding {pct(q['recall'])} % of the "
            f"{q['conflicting']} conflicting examples (recall); ARI {q['ari']:.2f}"
        )
    for name, entry in facts["val"].items():
        m = entry["metrics"]
        line = f"- {name.capitalize()} on {facts['val_split']}: accuracy {pct(m.get('accuracy'))} %"
        if not _circular(facts, name):
            line += f", worst group {pct(m.get('worst_group'))} %, unbiased {pct(m.get('unbiased'))} %"
        lines.append(line)
    health = facts.get("health")
    if "run" in facts["subject"]:
        if not health:
            lines.append("- Health checks: the run records none")
        else:
            warned = [h.get("name", "?") for h in health if str(h.get("status", "")).lower() not in ("pass", "ok")]
            lines.append(
                f"- Health checks: {len(health)}, "
                + (f"not passed: {', '.join(map(str, warned))}" if warned else "all passed")
            )
    return "\n".join(lines) + "\n"


def _groups(facts: dict[str, Any], figs: dict[str, str]) -> str:
    g = facts["groups"]
    if g["source"] == "attributes":
        what = (
            "Examples per class (rows) and bias attribute (columns) in each split, counts in the cells, colour on "
            "a log scale. A biased training set has its mass on one attribute per class."
        )
    elif g["source"] == "file":
        what = (
            f"Examples per class (rows) and pseudo-group (columns) of the {g['label']}; group 0 is each class's "
            "majority."
        )
    else:
        what = (
            f"Without attribute labels on both splits, the groups are the {g['label']} (for `error_set`, JTT's "
            "error set: its right / wrong split of each class): the inferred minority stands in for the "
            "bias-conflicting examples."
        )
    return f"## Groups\n\n{what}\n\n![counts]({figs['counts']})\n"


def _saliency(facts: dict[str, Any], figs: dict[str, str]) -> str:
    split = facts["val_split"]
    text = [
        "## Where the models look\n",
        "Input-gradient saliency of the true-class logit. Its magnitude |g| (summed over colour channels, heat "
        "colours) shows where a model reads; g itself shows which way: on colour images g is a colour, the colour "
        "change that raises the class's score most (mid-grey: no effect). A colour shortcut shows as each class's "
        "g tinted with the colour of its majority group (the easiest images above), a shape cue as a grey pattern "
        "of the shape. Where the run's maps look like the reference's, the run reads what the biased model reads.\n",
    ]
    if "saliency_mean" in figs:
        text.append(
            f"Mean per class over {split} examples (top row: their mean image; each model's row on its own "
            f"scale):\n\n![mean saliency]({figs['saliency_mean']})\n"
        )
    if "saliency_examples" in figs:
        text.append(
            "On the hardest and easiest training images of each class (image, then each model's map):\n\n"
            f"![saliency on examples]({figs['saliency_examples']})\n"
        )
    if "saliency_features" in figs:
        text.append(f"Mean per class and input feature:\n\n![feature saliency]({figs['saliency_features']})\n")
    return "\n".join(text)


def _accuracy(facts: dict[str, Any], figs: dict[str, str]) -> str:
    split = facts["val_split"]
    if split == "test":
        split = "test (the dataset's protocol has no validation split)"
    groups = facts["groups"]["label"]
    rows = ["| model | " + " | ".join(label for _, label in METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, entry in facts["val"].items():
        shown = ("accuracy",) if _circular(facts, name) else tuple(k for k, _ in METRICS)
        cells = [pct(entry["metrics"].get(k)) if k in shown else "–" for k, _ in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ""
    if facts["groups"]["source"] == "inferred":
        note = (
            "\nThe groups come from the reference's own predictions, so its accuracy on them says nothing (for "
            "`error_set`: 100 % and 0 % by construction); the figure shows the run's.\n"
        )
    figure = f"\n![per-group accuracy]({figs['group_accuracy']})\n" if "group_accuracy" in figs else ""
    return (
        f"## Per-group accuracy on {split}\n\nGroups: class × {groups}; accuracy in %.\n\n"
        + "\n".join(rows)
        + f"\n{note}{figure}"
    )


def _circular(facts: dict[str, Any], model: str) -> bool:
    """The reference scored on groups made from its own predictions (its group metrics say nothing)."""
    return model == "reference" and facts["groups"]["source"] == "inferred"


def _health(facts: dict[str, Any]) -> str:
    if "run" not in facts["subject"]:
        return ""
    health = facts.get("health")
    if not health:
        return "## Health checks\n\nThe run records no health checks (`health` is absent from its final.json).\n"
    rows = ["| check | status | message |", "|---|---|---|"]
    for check in health:
        message = str(check.get("message", "")).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| {check.get('name', '?')} | {check.get('status', '?')} | {message} |")
    return "## Health checks\n\n" + "\n".join(rows) + "\n"
