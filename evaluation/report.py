"""Run histories, their summary statistics, the curves figure and the results table.

Runs whose resolved configs differ only in --seed are one experiment repeated: the table gives
them one row (mean ± standard deviation over the seeds, and n), --compare one curve (the mean,
with a band from the lowest to the highest run).
"""
import json
import os
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sacrebleu.metrics import BLEU  # noqa: E402

from common.errors import UserError  # noqa: E402
from common.files import atomic_write  # noqa: E402
from common.schemas import (HISTORY_RECORD, read_checked, read_run_config,  # noqa: E402
                            read_summary)
from models import BRIDGES  # noqa: E402

from .experiments import experiment_key, seed_groups  # noqa: E402
from .generation import decoding  # noqa: E402
from .metrics import display, epoch_metrics, metric_names  # noqa: E402


def load_history(run_dir):
    path = Path(run_dir) / "training_history.json"
    if not path.is_file():
        raise UserError("no training_history.json", str(run_dir),
                        "pass a run's --output_dir (the history appears after epoch 1)")
    history = read_checked(path, [HISTORY_RECORD], "training_history.json",
                           "pass the --output_dir of a sonar-t5 training run")
    if not history:
        raise UserError("training_history.json holds no epochs yet", str(path))
    return history


def summarize(history):
    best = max(history, key=lambda r: r["val_bleu"])
    last = history[-1]
    return {"best_bleu": best["val_bleu"], "best_epoch": best["epoch"],
            "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
            "final_cond_gap": last.get("cond_gap"), "epochs_run": len(history),
            "total_time_s": sum(r.get("epoch_time_s", 0.0) for r in history)}


def format_summary(name, s):
    minutes = s["total_time_s"] / 60
    train = "n/a" if s["final_train_loss"] is None else f"{s['final_train_loss']:.4f}"
    return (f"{name}: best BLEU {s['best_bleu']:.2f} at epoch {s['best_epoch']}; final train "
            f"loss {train}, val loss {s['final_val_loss']:.4f}, "
            f"cond_gap {s['final_cond_gap']:.3f}; {s['epochs_run']} epochs in {minutes:.1f} min")


def plot_run(history, output, title):
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_bleu, ax_gap) = plt.subplots(1, 3, figsize=(15, 4.5))
    train = [float("nan") if r["train_loss"] is None else r["train_loss"] for r in history]
    ax_loss.plot(epochs, train, "o-", color="blue", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "o-", color="red", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss (cross-entropy)", title="Loss")
    bleu = [r["val_bleu"] for r in history]
    ax_bleu.plot(epochs, bleu, "o-", color="green", label="validation BLEU")
    ax_bleu.axhline(max(bleu), color="green", linestyle=":",
                    label=f"best {max(bleu):.2f} (epoch {epochs[bleu.index(max(bleu))]})")
    ax_bleu.set(xlabel="epoch", ylabel="BLEU", title="Validation BLEU")
    ax_gap.plot(epochs, [r.get("cond_gap", float("nan")) for r in history], "o-",
                color="purple", label="conditioning gap")
    ax_gap.plot(epochs, [epoch_metrics(r).get("unique_ratio", float("nan")) for r in history],
                "s--",
                color="gray", label="unique output ratio")
    ax_gap.axhline(0, color="black", linewidth=0.5)
    ax_gap.set(xlabel="epoch", ylabel="nats/token | ratio", title="Is the input used?")
    _finish(fig, [ax_loss, ax_bleu, ax_gap], title, output)


def plot_comparison(groups, output):
    """groups: {label: [history, ...]} (one history, or a seed group's); BLEU and validation
    loss of each, one figure. A group is drawn as its mean over the epochs all its runs have,
    with a band from its lowest to its highest run."""
    fig, (ax_bleu, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, histories in groups.items():
        epochs = [r["epoch"] for r in histories[0]][:min(map(len, histories))]
        color = None
        for ax, key in ((ax_bleu, "val_bleu"), (ax_loss, "val_loss")):
            values = [[h[i][key] for h in histories] for i in range(len(epochs))]
            line, = ax.plot(epochs, [statistics.fmean(v) for v in values], "o-", label=label,
                            color=color)
            color = line.get_color()
            if len(histories) > 1:
                ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values],
                                color=color, alpha=0.2)
    ax_bleu.set(xlabel="epoch", ylabel="BLEU", title="Validation BLEU")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Validation loss")
    _finish(fig, [ax_bleu, ax_loss], "Run comparison", output)


def _finish(fig, axes, title, output):
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    fmt = Path(output).suffix.lstrip(".").lower()
    atomic_write(output, lambda f: fig.savefig(f, dpi=150, format=fmt))
    plt.close(fig)


# -- BLEU by reference length ----------------------------------------------------------------
LENGTH_BUCKETS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, None))  # words


def bleu_by_length(references, hypotheses):
    """-> [(bucket label, sentences, BLEU of those sentences)], by the reference's length in
    words; buckets with no sentence are left out."""
    rows = []
    for low, high in LENGTH_BUCKETS:
        pairs = [(r, h) for r, h in zip(references, hypotheses)
                 if low <= len(r.split()) and (high is None or len(r.split()) <= high)]
        if pairs:
            refs, hyps = zip(*pairs)
            rows.append((f"{low}-{high}" if high else f"{low}+", len(pairs),
                         BLEU().corpus_score(list(hyps), [list(refs)]).score))
    return rows


def plot_bleu_by_length(systems, output):
    """systems: {label: [(bucket, sentences, BLEU)]} -> grouped bars, one colour a system,
    each bucket's sentence count under its name."""
    buckets = [f"{lo}-{hi}" if hi else f"{lo}+" for lo, hi in LENGTH_BUCKETS]
    counts = {}
    for rows in systems.values():
        counts.update({b: n for b, n, _ in rows})
    shown = [b for b in buckets if b in counts]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(shown) + 2), 4.5))
    width = 0.8 / len(systems)
    for i, (name, rows) in enumerate(systems.items()):
        bleu = dict((b, v) for b, _, v in rows)
        ax.bar([x + i * width - 0.4 + width / 2 for x in range(len(shown))],
               [bleu.get(b, float("nan")) for b in shown], width, label=name)
    ax.set_xticks(range(len(shown)), [f"{b}\n({counts[b]})" for b in shown])
    ax.set(xlabel="reference length in words (sentences)", ylabel="BLEU",
           title="BLEU by reference length")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()
    fig.tight_layout()
    fmt = Path(output).suffix.lstrip(".").lower()
    atomic_write(output, lambda f: fig.savefig(f, dpi=150, format=fmt))
    plt.close(fig)


# -- results table ---------------------------------------------------------------------------
SETTING_COLUMNS = ("run", "bridge", "resampler_input", "num_latents", "num_layers", "frozen",
                   "word_dropout", "parameters", "decoding", "n", "best_epoch")


def column_names(choice=None):
    """--columns: the measures a table shows (metric names, and cond_gap): None = the
    headline ones, ["all"] = every one."""
    every = [*metric_names(), "cond_gap"]
    if not choice:
        return [*metric_names(headline_only=True), "cond_gap"]
    if "all" in choice:
        if len(choice) > 1:
            raise UserError("--columns all stands alone", "command line",
                            "give 'all', or the names you want")
        return every
    unknown = [c for c in choice if c not in every]
    if unknown:
        raise UserError(f"unknown --columns {', '.join(unknown)}", "command line",
                        f"choose from: all, {', '.join(every)}")
    return list(choice)


def metric_columns(names):
    """{column label: decimals} of these measures."""
    return {label(n): (3 if n == "cond_gap" else display(n).decimals) for n in names}


def label(name):
    return "cond_gap" if name == "cond_gap" else display(name).label
def history_groups(run_dirs):
    """--compare: {label: [history, ...]}, seed groups labelled with their runs and n."""
    runs = [(Path(d), read_run_config(Path(d) / "config.json")
             if (Path(d) / "config.json").is_file() else {"args": {"output_dir": str(d)}})
            for d in run_dirs]
    groups = seed_groups(runs, lambda r: experiment_key(r[1]),
                         lambda r: r[1]["args"].get("seed"))
    return {(g[0][0].name if len(g) == 1 else
             f"{', '.join(d.name for d, _ in g)} (mean of {len(g)} seeds)"):
            [load_history(d) for d, _ in g] for g in groups}


def table_row(path):
    """A run directory (best epoch of its history) or a validation_summary.json. The same
    checkpoint scored with other generate() settings is another experiment."""
    path = Path(path)
    if path.is_file() or (path / "validation_summary.json").is_file():
        summary_path = path if path.is_file() else path / "validation_summary.json"
        summary = read_summary(summary_path)
        if not summary.get("checkpoint"):
            raise UserError("validation_summary.json names no checkpoint", str(summary_path),
                            "validate the checkpoint again with validate_perceiver_model.py")
        run_dir = Path(summary["checkpoint"]).parent
        if not (run_dir / "config.json").is_file():
            raise UserError(f"the checkpoint this summary scored has no run directory here "
                            f"({run_dir / 'config.json'} not found)", str(summary_path),
                            "validate the run again (summaries record the checkpoint's full "
                            "path) or run the table tool where validation ran")
        generation = summary["generation"]
        # summaries before unique_ratio was a metric kept it in their diversity report
        found = {"unique_ratio": summary["diversity"]["unique_ratio"], **summary}
        scores = {"best_epoch": summary.get("epoch"), "cond_gap": summary.get("cond_gap"),
                  **{label(n): found.get(n) for n in metric_names()}}
    else:
        run_dir = path
        generation = None  # the settings its validation used during training
        history = load_history(run_dir)
        best = max(history, key=lambda r: r["val_bleu"])
        found = epoch_metrics(best)
        scores = {"best_epoch": best["epoch"], "cond_gap": best.get("cond_gap"),
                  **{label(n): found.get(n) for n in metric_names()}}
    config = read_run_config(run_dir / "config.json")
    m, a = config["model_config"], config["args"]
    if generation is None:
        generation = config.get("generation") or {"num_beams": a.get("num_beams") or 4}
    experiment = json.dumps([experiment_key(config), generation], sort_keys=True)
    return {"experiment": experiment, "seed": a.get("seed"), "run": run_dir.name,
            "bridge": m["bridge"], "resampler_input": m["resampler_input"],
            "num_latents": m["num_latents"],
            "num_layers": bridge_layers(m),
            "frozen": "yes" if a["freeze_encoder"] else "no",
            "word_dropout": a.get("word_dropout", 0.0),
            "parameters": f"{config['parameters']['total'] / 1e6:.1f}M",
            "decoding": decoding(generation), **scores,
            "signatures": {n: found.get(f"{n}_signature") for n in metric_names()}}


def bridge_layers(model_config):
    """The bridge's layer count: --num_layers, unless the kind has a fixed one."""
    bridge = BRIDGES.get(model_config["bridge"])
    return (bridge and bridge.fixed_layers) or model_config["num_layers"]


def results_table(paths, columns=None):
    """-> (frame, notes): one row per run, or per seed group, its metrics as mean ± standard
    deviation (n - 1); columns: column_names(); notes: how each shown metric was computed
    (the conventions and signatures), for the caption."""
    names = column_names(columns)
    found = [table_row(p) for p in paths]
    rows = seed_groups(found, lambda r: r["experiment"], lambda r: r["seed"])
    shown = metric_columns(names)
    frame = pd.DataFrame([group_row(g, shown) for g in rows],
                         columns=[*SETTING_COLUMNS, *shown])
    return frame, metric_notes(names, found)


def metric_notes(names, rows):
    """One note per convention or metric shown: its name and its signature(s) as the rows
    recorded them (older runs may lack some)."""
    notes = []
    for family, title in METRIC_FAMILIES:
        members = [n for n in names if n != "cond_gap" and metric_family(n) == family]
        if not members:
            continue
        signatures = sorted({r["signatures"].get(n) for r in rows for n in members} - {None})
        notes.append(f"{', '.join(label(n) for n in members)}: {title}"
                     + (f"; {' / '.join(signatures)}" if signatures else ""))
    return notes


# How the table's caption names each metric's convention.
METRIC_FAMILIES = (
    ("bleu", "ssvp_slt's convention (sacrebleu's defaults: 13a tokenisation, exponential "
             "smoothing), BLEU-n cumulative to order n"),
    ("raw_bleu", "Uni-Sign's convention (raw_corpus_bleu: no tokenisation, floor smoothing "
                 "0, effective order), cumulative to order n"),
    ("chrf", "chrF (sacrebleu)"),
    ("rouge_l", "ROUGE-L F1 x 100, mean over sentences"),
    ("unique_ratio", "share of distinct translations"),
)


def metric_family(name):
    return "raw_bleu" if name.startswith("raw_bleu") else \
        "bleu" if name.startswith("bleu") else name


def group_row(rows, columns):
    """columns: {metric column: decimals}."""
    row = {**rows[0], "n": len(rows)}
    if len(rows) == 1:
        return {**row, **{k: None if row[k] is None else round(row[k], d)
                          for k, d in columns.items()}}
    row["run"] = ", ".join(r["run"] for r in rows)
    row["best_epoch"] = "/".join(str(r["best_epoch"]) for r in rows)
    for key, decimals in columns.items():
        values = [r[key] for r in rows]
        row[key] = (None if None in values else f"{statistics.fmean(values):.{decimals}f} ± "
                                                 f"{statistics.stdev(values):.{decimals}f}")
    return row


def to_markdown(frame, notes=()):
    """The table, then its notes (the conventions and signatures) after a blank line."""
    table = frame.to_markdown(index=False)
    return table + ("\n\n" + "\n".join(f"- {note}" for note in notes) if notes else "")


def to_latex(frame, notes=()):
    """booktabs table; underscores and other specials escaped; the caption names each
    metric's convention and signature, and what ± means."""
    styler = frame.style.hide(axis="index").format(precision=2, escape="latex")
    styler = styler.format_index(escape="latex", axis=1)
    body = styler.to_latex(hrules=True, column_format="l" * len(frame.columns))
    spread = (" Mean $\\pm$ standard deviation over the n seeds of a row."
              if (frame["n"].astype(int) > 1).any() else "")
    caption = "Results (sonar-t5)." + spread + "".join(
        f" {latex_text(note)}." for note in notes)
    return ("\\begin{table}[t]\n\\centering\n" + body
            + f"\\caption{{{caption}}}\n\\end{{table}}\n")


LATEX_SPECIALS = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#",
                  "$": "\\$", "{": "\\{", "}": "\\}", "|": "\\textbar{}",
                  "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}


def latex_text(text):
    """Plain text for LaTeX: its specials escaped (a signature's | and _ included)."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


def check_figure_path(output, flag="--output"):
    """Before any work: the figure's format is one matplotlib writes, its directory exists."""
    path = Path(output)
    formats = plt.figure().canvas.get_supported_filetypes()
    plt.close("all")
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in formats:
        raise UserError(f"{flag} has {'no' if not fmt else 'an unknown'} image extension "
                        f"('{path.suffix}')", str(path),
                        f"end it in one of: {', '.join('.' + f for f in sorted(formats))}")
    check_parent_dir(path, flag)


def check_parent_dir(path, flag="--output"):
    parent = Path(path).parent
    if not parent.is_dir():
        raise UserError(f"{flag}'s directory does not exist", str(parent),
                        "create it first, or choose another path")
    if not os.access(parent, os.W_OK):  # read-only file systems too
        raise UserError(f"{flag}'s directory is not writable", str(parent),
                        "pass --output with a path in a directory you can write to")
