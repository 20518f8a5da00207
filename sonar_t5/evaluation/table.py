"""The results table: one row per run, or per seed group (runs whose resolved configs differ
only in --seed: mean ± standard deviation over the seeds, and n), as Markdown and as a booktabs
LaTeX table a thesis can paste.

Each metric is shown with its own precision (its Display in sonar_t5/evaluation/metrics.py), the same
in both formats; the metric conventions and sacrebleu signatures go in notes under the table,
not in its caption.
"""
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sonar_t5.common.errors import UserError
from sonar_t5.common.schemas import read_run_config, read_summary
from sonar_t5.models.bridges import layer_count

from .experiments import experiment_key, seed_groups
from .generation import GenerationSettings, decoding
from .metrics import display, epoch_metrics, metric_names
from .report import load_history

# The settings that tell rows apart, and how a table heads each column.
SETTING_COLUMNS = {"run": "Run", "bridge": "Bridge", "resampler_input": "Input",
                   "num_latents": "Latents", "num_layers": "Layers", "frozen": "Frozen enc.",
                   "word_dropout": "Word dropout", "parameters": "Params",
                   "decoding": "Decoding", "n": "n", "best_epoch": "Best epoch"}
NUMERIC_SETTINGS = {"num_latents", "num_layers", "word_dropout", "n", "best_epoch"}
COND_GAP = display("cond_gap")


@dataclass
class ResultsTable:
    """rows: {column: value} with each metric as (mean, standard deviation or None), or None
    where a run lacks it; metrics: the metric columns shown (names); notes: how each was
    computed."""
    rows: list
    metrics: list
    notes: list = field(default_factory=list)

    def constant_settings(self):
        """Setting columns with one value in every row (with several rows): said once, under
        the table, instead of a column each."""
        if len(self.rows) < 2:
            return []
        return [c for c in SETTING_COLUMNS if c not in ("run", "n", "best_epoch")
                and len({str(r[c]) for r in self.rows}) == 1]

    def best(self):
        """{metric: the largest mean} (for each shown metric, higher is better)."""
        found = {}
        for name in self.metrics:
            means = [r[name][0] for r in self.rows if r[name] is not None]
            if len(means) > 1:
                found[name] = max(means)
        return found


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
        best_epoch = summary.get("epoch")
    else:
        run_dir = path
        generation = None  # the settings its validation used during training
        history = load_history(run_dir)
        best = max(history, key=lambda r: r["val_bleu"])
        # the record's metrics are val_NAME, their signatures NAME_signature
        found, best_epoch = {**best, **epoch_metrics(best)}, best["epoch"]
    config = read_run_config(run_dir / "config.json")
    m, a = config["model_config"], config["args"]
    if generation is None:
        generation = config.get("generation") or vars(GenerationSettings.from_args(a))
    experiment = json.dumps([experiment_key(config), generation], sort_keys=True)
    return {"experiment": experiment, "seed": a.get("seed"), "run": run_dir.name,
            "bridge": m["bridge"], "resampler_input": m["resampler_input"],
            "num_latents": m["num_latents"],
            "num_layers": layer_count(m["bridge"], m["num_layers"]),
            "frozen": "yes" if a.get("freeze_encoder") else "no",
            "word_dropout": a.get("word_dropout", 0.0),
            "parameters": f"{config['parameters']['total'] / 1e6:.1f}M",
            "decoding": decoding(generation), "best_epoch": best_epoch,
            **{n: found.get(n) for n in [*metric_names(), "cond_gap"]},
            "signatures": {n: found.get(f"{n}_signature") for n in metric_names()}}


def results_table(paths, columns=None):
    """-> ResultsTable of these runs and summaries, seed groups pooled; columns:
    column_names()."""
    names = column_names(columns)
    found = [table_row(p) for p in paths]
    groups = seed_groups(found, lambda r: r["experiment"], lambda r: r["seed"])
    return ResultsTable([group_row(g, names) for g in groups], names,
                        metric_notes(names, found))


def named_groups_table(groups, columns=None):
    """groups: {row name: [paths]}, each pooled into one row as given (a sweep knows its
    groups) -> ResultsTable."""
    names = column_names(columns)
    found = {name: [table_row(p) for p in paths] for name, paths in groups.items()}
    rows = [{**group_row(rows, names), "run": name} for name, rows in found.items()]
    return ResultsTable(rows, names, metric_notes(names, [r for g in found.values() for r in g]))


def group_row(rows, names):
    """One row of a seed group (or of one run): its settings, n, and each metric as
    (mean, standard deviation over the seeds, or None for one run)."""
    row = {c: rows[0][c] for c in SETTING_COLUMNS if c in rows[0]}
    row["n"] = len(rows)
    if len(rows) > 1:
        row["run"] = group_name([r["run"] for r in rows])
        row["best_epoch"] = "/".join(str(r["best_epoch"]) for r in rows)
    for name in names:
        values = [r[name] for r in rows]
        row[name] = None if None in values else (
            statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None)
    return row


def group_name(names):
    """A seed group's runs in a few characters: "seed{1,2,3}" where the names differ only in
    a number at their end (a table column stays narrow), else the names joined."""
    split = [re.fullmatch(r"(.*?)(\d+)", name) for name in names]
    if all(split) and len({m.group(1) for m in split}) == 1:
        return f"{split[0].group(1)}{{{','.join(m.group(2) for m in split)}}}"
    return ", ".join(names)


def metric_notes(names, rows):
    """One note per convention or metric shown: its name and its signature(s) as the rows
    recorded them (older runs may lack some)."""
    notes = []
    for family, title in METRIC_FAMILIES:
        members = [n for n in names if n != "cond_gap" and metric_family(n) == family]
        if not members:
            continue
        signatures = sorted({r["signatures"].get(n) for r in rows for n in members} - {None})
        notes.append(f"{', '.join(display(n).label for n in members)}: {title}"
                     + (f"; {' / '.join(signatures)}" if signatures else ""))
    if "cond_gap" in names:
        notes.append(f"{COND_GAP.label}: validation loss with shuffled prefixes minus with "
                     "the true ones, nats per token (near 0: the input is ignored)")
    return notes


# How the notes name each metric's convention.
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


def metric_text(value, name, pm="±"):
    """A metric cell: "73.56", or "73.56 ± 2.02" for a seed group, at the metric's precision."""
    if value is None:
        return ""
    mean, std = value
    decimals = display(name).decimals
    return f"{mean:.{decimals}f}" + ("" if std is None else f" {pm} {std:.{decimals}f}")


def setting_text(value):
    return "" if value is None else str(value)


def headers(table, columns):
    return [SETTING_COLUMNS.get(c) or display(c).label for c in columns]


def shown_columns(table):
    constant = set(table.constant_settings())
    return [c for c in SETTING_COLUMNS if c not in constant] + table.metrics


def common_note(table):
    """The settings every row shares, said once."""
    constant = table.constant_settings()
    if not constant:
        return None
    return "All rows: " + ", ".join(f"{SETTING_COLUMNS[c].lower()} {table.rows[0][c]}"
                                    for c in constant)


def is_numeric(table, column):
    """Right-aligned in both formats."""
    return column in table.metrics or column in NUMERIC_SETTINGS


def is_best(row, column, best):
    """best: ResultsTable.best() where --bold_best asks, else {}."""
    return column in best and row[column] is not None and row[column][0] == best[column]


def all_notes(table):
    """What goes under the table: the settings every row shares, then the metric notes."""
    return [n for n in [common_note(table), *table.notes] if n]


def to_markdown(table, bold_best=False):
    """The table, then its notes (the shared settings, conventions and signatures) after a
    blank line. Numbers are right-aligned."""
    columns, best = shown_columns(table), table.best() if bold_best else {}
    cells = []
    for row in table.rows:
        line = []
        for c in columns:
            text = metric_text(row[c], c) if c in table.metrics else setting_text(row[c])
            line.append(f"**{text}**" if is_best(row, c, best) else text)
        cells.append(line)
    frame = pd.DataFrame(cells, columns=headers(table, columns))
    aligned = ["right" if is_numeric(table, c) else "left" for c in columns]
    text = frame.to_markdown(index=False, disable_numparse=True, colalign=aligned)
    notes = all_notes(table)
    return text + ("\n\n" + "\n".join(f"- {note}" for note in notes) if notes else "")


def to_latex(table, bold_best=False, caption="Results."):
    """A booktabs table in a table float: numeric columns right-aligned, the best mean of
    each metric in bold where asked, ± as $\\pm$, readable headers; a short caption, and the
    shared settings, conventions and signatures as notes under the table. A table wider than
    the text is set in small type and, where still wider, scaled down to the text width
    (graphicx)."""
    columns, best = shown_columns(table), table.best() if bold_best else {}
    lines = [" & ".join(latex_text(h) for h in headers(table, columns)) + r" \\"]
    for row in table.rows:
        cells = []
        for c in columns:
            if c in table.metrics:
                text = metric_text(row[c], c, pm=r"$\pm$")
                cells.append(rf"\textbf{{{text}}}" if is_best(row, c, best) else text)
            else:
                cells.append(latex_text(setting_text(row[c])))
        lines.append(" & ".join(cells) + r" \\")
    align = "".join("r" if is_numeric(table, c) else "l" for c in columns)
    spread = (r" Mean $\pm$ standard deviation over the n seeds of a row."
              if any(r["n"] > 1 for r in table.rows) else "")
    notes = all_notes(table)
    return "\n".join([
        r"% needs \usepackage{booktabs} and \usepackage{graphicx}",
        r"\begin{table}[t]", r"\centering",
        r"\footnotesize\setlength{\tabcolsep}{3pt}",  # wide: small type first, then scaled
        rf"\caption{{{latex_text(caption)}{spread}" + (
            r" Best mean of each metric in bold." if best else "") + "}",
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{align}}}", r"\toprule", lines[0], r"\midrule", *lines[1:],
        r"\bottomrule", r"\end{tabular}}",
        r"\par\smallskip{\footnotesize\raggedright",
        *[latex_text(n, breakable=True) + r"\par" for n in notes],
        "}", r"\end{table}", ""])


LATEX_SPECIALS = {"\\": "\\textbackslash{}", "_": "\\_", "%": "\\%", "&": "\\&", "#": "\\#",
                  "$": "\\$", "{": "\\{", "}": "\\}", "|": "\\textbar{}",
                  "~": "\\textasciitilde{}", "^": "\\textasciicircum{}", "±": "$\\pm$"}


def latex_text(text, breakable=False):
    """Plain text for LaTeX: its specials escaped (a signature's | and _ included);
    breakable: a line may break after each | and / (a signature is one long word)."""
    out = "".join(LATEX_SPECIALS.get(char, char) for char in text)
    if breakable:
        out = out.replace("\\textbar{}", "\\textbar\\allowbreak{}").replace(
            "/", "/\\allowbreak{}")
    return out
