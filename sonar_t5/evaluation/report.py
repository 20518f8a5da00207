"""Run histories, their summary statistics and the figures: a run's curves, several runs
compared, BLEU by reference length (the results table is sonar_t5/evaluation/table.py).

Runs whose resolved configs differ only in --seed are one experiment repeated: --compare draws
them as one curve (the mean, with a band from the lowest to the highest run).
"""
import os
import statistics
from itertools import cycle
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
from sacrebleu.metrics import BLEU  # noqa: E402

from sonar_t5.common.errors import UserError  # noqa: E402
from sonar_t5.common.files import atomic_write  # noqa: E402
from sonar_t5.common.schemas import HISTORY_RECORD, read_checked, read_run_config  # noqa: E402

from .experiments import experiment_key, seed_groups  # noqa: E402
from .metrics import epoch_metrics  # noqa: E402


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


# Okabe-Ito's colour-blind-safe palette (Okabe & Ito 2008), in the order the figures use it.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
           "#000000")
LOSS_LABEL = "cross-entropy (nats/token)"


def plot_run(history, output, title=None):
    """A run's curves, three panels: the losses; validation BLEU; whether the input is used
    (the conditioning gap in nats/token on the left axis, the share of distinct translations
    on its own 0-1 axis on the right). title: a heading above them (none by default: a
    thesis gives its figures captions)."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_bleu, ax_gap) = plt.subplots(1, 3, figsize=(15, 4.5))
    train = [float("nan") if r["train_loss"] is None else r["train_loss"] for r in history]
    ax_loss.plot(epochs, train, "o-", color=COLOURS[0], label="training")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], "s--", color=COLOURS[1],
                 label="validation")
    ax_loss.set(xlabel="epoch", ylabel=LOSS_LABEL, title="Loss")
    bleu = [r["val_bleu"] for r in history]
    ax_bleu.plot(epochs, bleu, "o-", color=COLOURS[2], label="validation BLEU")
    ax_bleu.axhline(max(bleu), color=COLOURS[2], linestyle=":",
                    label=f"best {max(bleu):.2f} (epoch {epochs[bleu.index(max(bleu))]})")
    ax_bleu.set(xlabel="epoch", ylabel="BLEU (sacrebleu, 13a)", title="Validation BLEU")
    gap, = ax_gap.plot(epochs, [r.get("cond_gap", float("nan")) for r in history], "o-",
                       color=COLOURS[3], label="conditioning gap (left)")
    ax_gap.axhline(0, color="black", linewidth=0.5)
    ax_gap.set(xlabel="epoch", ylabel="conditioning gap (nats/token)",
               title="Is the input used?")
    ax_unique = ax_gap.twinx()
    unique, = ax_unique.plot(epochs, [epoch_metrics(r).get("unique_ratio", float("nan"))
                                      for r in history], "s--", color=COLOURS[4],
                             label="distinct translations (right)")
    ax_unique.set(ylabel="share of distinct translations", ylim=(0, 1.05))
    _finish(fig, [ax_loss, ax_bleu, ax_gap], title, output,
            legends={ax_gap: [gap, unique]})


def plot_comparison(groups, output, title=None):
    """groups: {label: [history, ...]} (one history, or a seed group's); BLEU and validation
    loss of each, one figure. A group is drawn as its mean over the epochs all its runs have,
    with a band from its lowest to its highest run."""
    fig, (ax_bleu, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (label, histories), colour in zip(groups.items(), cycle(COLOURS)):
        epochs = [r["epoch"] for r in histories[0]][:min(map(len, histories))]
        for ax, key in ((ax_bleu, "val_bleu"), (ax_loss, "val_loss")):
            values = [[h[i][key] for h in histories] for i in range(len(epochs))]
            ax.plot(epochs, [statistics.fmean(v) for v in values], "o-", label=label,
                    color=colour)
            if len(histories) > 1:
                ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values],
                                color=colour, alpha=0.2)
    ax_bleu.set(xlabel="epoch", ylabel="BLEU (sacrebleu, 13a)", title="Validation BLEU")
    ax_loss.set(xlabel="epoch", ylabel=LOSS_LABEL, title="Validation loss")
    _finish(fig, [ax_bleu, ax_loss], title, output)


def plot_group_scores(groups, output, ylabel="test BLEU", title=None):
    """groups: [(name, [each seed's score], (low, high) of the pooled 95% interval)]. Each
    group: its seeds as crosses (right), their mean with ± one standard deviation (thick), and
    the interval of its pooled outputs (thin, left; beside the mean, not behind it)."""
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(groups) + 2), 4.2))
    for x, ((name, scores, interval), colour) in enumerate(zip(groups, cycle(COLOURS))):
        mean = statistics.fmean(scores)
        spread = statistics.stdev(scores) if len(scores) > 1 else 0.0
        low, high = interval
        ax.errorbar(x - 0.15, (low + high) / 2, yerr=(high - low) / 2, fmt="none", color=colour,
                    capsize=3, elinewidth=1,
                    label="95% interval of the pooled outputs (bootstrap)" if x == 0 else None)
        ax.errorbar(x, mean, yerr=spread, fmt="o", color=colour, markersize=8, capsize=6,
                    elinewidth=3, label="mean ± std over seeds" if x == 0 else None)
        ax.plot([x + 0.15] * len(scores), scores, "x", color="black", markersize=5,
                label="each seed" if x == 0 else None)
    ax.set_xticks(range(len(groups)), [name for name, _, _ in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set(ylabel=ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False,
              fontsize="small")  # one column: three entries side by side outgrow a small figure
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, output)


def _finish(fig, axes, title, output, legends=None):
    """Grid, integer epochs, legends (legends: {axis: handles} where an axis has a twin),
    an optional title; written in the format of output's extension (PNG, PDF, SVG...)."""
    for ax in axes:
        ax.grid(alpha=0.3)
        handles = (legends or {}).get(ax)
        if handles:  # lines on two axes: "best" would see one axis's; below the panel instead
            ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14),
                      ncol=len(handles), frameon=False)
        else:
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, output)


def save_figure(fig, output):
    fmt = Path(output).suffix.lstrip(".").lower()
    atomic_write(output, lambda f: fig.savefig(f, dpi=150, format=fmt))
    plt.close(fig)


def system_name(path):
    """How a figure's legend names a scored system: its run's directory name (found upwards
    from a translations file, a results/SPLIT or validation directory), else the path's."""
    path = Path(path).resolve()
    for folder in [path, *path.parents][:4]:
        if (folder / "config.json").is_file():
            return folder.name
    return path.name


# -- BLEU by reference length ----------------------------------------------------------------
LENGTH_BUCKETS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 30), (31, None))  # words


def length_bucket(words):
    """The LENGTH_BUCKETS entry a reference of this many words falls in."""
    return next(b for b in LENGTH_BUCKETS if b[1] is None or words <= b[1])


def length_label(bucket):
    low, high = bucket
    return f"{low}-{high}" if high else f"{low}+"


def bleu_by_length(references, hypotheses):
    """-> [(bucket label, sentences, BLEU of those sentences, their length ratio)], by the
    reference's length in words; buckets with no sentence are left out. The length ratio
    (hypothesis / reference tokens, sacrebleu's) below 1 is a model cutting its sentences
    short, above 1 one that runs on."""
    groups = {}
    for r, h in zip(references, hypotheses):
        groups.setdefault(length_bucket(len(r.split())), []).append((r, h))
    rows = []
    for bucket in LENGTH_BUCKETS:
        if bucket in groups:
            refs, hyps = zip(*groups[bucket])
            score = BLEU().corpus_score(list(hyps), [list(refs)])
            rows.append((length_label(bucket), len(refs), score.score,
                         score.sys_len / max(score.ref_len, 1)))
    return rows


def plot_bleu_by_length(systems, output, title=None):
    """systems: {label: [(bucket, sentences, BLEU, ...)]} -> grouped bars, one colour a system,
    each bucket's sentence count under its name."""
    save_figure(bucket_bars(systems, "BLEU (sacrebleu, 13a)", title), output)


def bucket_bars(systems, ylabel, title=None, xlabel="reference length in words (sentences)",
                buckets=None, reference_line=None):
    """systems: {label: [(bucket, count, value, ...)]} -> a figure of grouped bars, one colour
    a system, each bucket's count under its name. buckets: their order (default: the
    reference-length buckets); reference_line: a y to mark (e.g. 1 for a length ratio)."""
    buckets = buckets or [length_label(b) for b in LENGTH_BUCKETS]
    counts = {}
    for rows in systems.values():
        counts.update({b: n for b, n, *_ in rows})
    shown = [b for b in buckets if b in counts]
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(shown) + 2), 4.5))
    width = 0.8 / len(systems)
    for i, ((name, rows), colour) in enumerate(zip(systems.items(), cycle(COLOURS))):
        value = {b: v for b, _, v, *_ in rows}
        ax.bar([x + i * width - 0.4 + width / 2 for x in range(len(shown))],
               [value.get(b, float("nan")) for b in shown], width, label=name, color=colour)
    if reference_line is not None:
        ax.axhline(reference_line, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(shown)), [f"{b}\n({counts[b]})" for b in shown])
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    # below the panel: inside, it would hide the bars of some bucket
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(systems), 3),
              frameon=False)
    fig.tight_layout()
    return fig


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
