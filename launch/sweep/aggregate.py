"""A sweep's results in one place, SWEEP/aggregate/:

- results.md, results.tex: the results table, one row per group, its seeds pooled (mean ±
  standard deviation, n), both BLEU conventions, the best mean of each metric in bold;
- significance.txt, significance.json: every group against the baseline group, sacrebleu's
  paired bootstrap and approximate randomisation on the groups' outputs, seed i beside seed i;
- scores.png, scores.pdf: each group's score, its seeds, their spread and the interval;
- README.md: the page to cite: which runs, which commit, which data, which conventions, and
  the above.

Scores are the end-of-training ones each run wrote with the validation script's settings
(RUN/results/test/, or results/val/ where the sweep has no test split).
"""
import hashlib
import json
import logging
import time
from pathlib import Path

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import atomic_write, write_json
from sonar_t5.evaluation.report import plot_group_scores
from sonar_t5.evaluation.significance import compare_groups, format_rows
from sonar_t5.evaluation.table import named_groups_table, table_row, to_latex, to_markdown

from .plan import AGGREGATE_DIR, PLAN_FILE, read_recorded
from .status import sweep_status


def aggregate(plan, n_samples=1000):
    """Write SWEEP/aggregate/ from the runs that are done; -> (the README's text, its
    p-value lines or why there are none)."""
    logging.getLogger("sacrebleu").setLevel(logging.WARNING)
    statuses = {s.name: s for s in sweep_status(plan)}
    groups = [(group, [plan.run_dir(r) for r in runs if statuses[r.name].state == "done"])
              for group, runs in plan.groups().items()]
    missing = [name for name, s in statuses.items() if s.state != "done"]
    groups = [(group, dirs) for group, dirs in groups if dirs]
    if not groups:
        raise UserError("no run of the sweep is done yet", str(plan.sweep_dir),
                        f"see python -m launch.sweep status {plan.sweep_dir}")
    runs = [d for _, dirs in groups for d in dirs]
    split = "test" if all((d / "results" / "test").is_dir() for d in runs) else "val"
    summaries = {group: [d / "results" / split for d in dirs] for group, dirs in groups}
    table = named_groups_table(summaries)

    out = plan.sweep_dir / AGGREGATE_DIR
    out.mkdir(exist_ok=True)
    markdown = to_markdown(table, bold_best=True)
    write_text(out / "results.md", markdown + "\n")
    write_text(out / "results.tex", to_latex(table, bold_best=True, caption=(
        f"{split.capitalize()} scores of the sweep {plan.sweep_dir.name}, one row per group.")))

    rows, verdicts, why_not = significance_of(plan, groups, split, n_samples)
    significance = "\n".join(verdicts) + "\n\n" + format_rows(rows, n_samples) if rows else ""
    if rows:
        write_text(out / "significance.txt", significance + "\n")
        plain = json.loads(json.dumps(rows, default=float))  # sacrebleu's numpy numbers
        write_json(out / "significance.json", {"split": split, "n_samples": n_samples,
                                               "baseline": plan.baseline, "rows": plain})
        bleu = {r["system"]: r for r in rows["BLEU"]}
        scores = [(group, [table_row(s)["bleu"] for s in summaries[group]],
                   (bleu[group]["mean"] - bleu[group]["ci"], bleu[group]["mean"] + bleu[group]["ci"]))
                  for group, _ in groups]
        for suffix in ("png", "pdf"):
            plot_group_scores(scores, out / f"scores.{suffix}", ylabel=f"{split} BLEU")
    page = readme(plan, groups, split, markdown, significance, why_not, missing, n_samples)
    write_text(out / "README.md", page)
    return page, verdicts or [f"significance not tested: {why_not}"]


def significance_of(plan, groups, split, n_samples):
    """-> (paired_tests' rows, the p-value lines, why there are none)."""
    sizes = {len(dirs) for _, dirs in groups}
    found = dict(groups)
    if len(groups) < 2:
        return None, [], "one group: nothing to compare"
    if plan.baseline not in found:
        return None, [], f"the baseline group {plan.baseline} has no finished run yet"
    if len(sizes) > 1:
        return None, [], ("the groups have different numbers of finished seeds ("
                          + ", ".join(f"{g} {len(d)}" for g, d in groups) + ")")
    ordered = [(plan.baseline, found[plan.baseline])] + [
        (g, dirs) for g, dirs in groups if g != plan.baseline]
    rows = compare_groups(ordered, split, n_samples)
    lines = []
    for bleu, chrf in zip(rows["BLEU"][1:], rows["chrF"][1:]):
        base_bleu, base_chrf = rows["BLEU"][0], rows["chrF"][0]
        lines.append(f"{bleu['system']} vs {plan.baseline}: BLEU {bleu['score'] - base_bleu['score']:+.2f}"
                     f" (p = {bleu['p_bootstrap']:.4f} paired bootstrap, "
                     f"{bleu['p_randomisation']:.4f} approximate randomisation), chrF "
                     f"{chrf['score'] - base_chrf['score']:+.2f} (p = {chrf['p_bootstrap']:.4f}"
                     f" / {chrf['p_randomisation']:.4f})")
    return rows, lines, None


def readme(plan, groups, split, markdown, significance, why_not, missing, n_samples):
    recorded = read_recorded(plan.sweep_dir / PLAN_FILE)
    toolkit = recorded.get("toolkit", {})
    commit = toolkit.get("commit") or "unknown (not a git checkout)"
    if toolkit.get("modified_files"):
        commit += " (with files modified since)"
    seeds = sorted({len(dirs) for _, dirs in groups})
    lines = [f"# Sweep {plan.sweep_dir.name}: results", "",
             f"- Sweep file: `{recorded.get('sweep_file')}` (as run: `sweep.yaml`, sha256 "
             f"{recorded.get('sweep_sha256', '?')[:12]}); every run's flags: `{PLAN_FILE}`",
             f"- Toolkit commit: {commit}",
             f"- Aggregated {time.strftime('%Y-%m-%d %H:%M:%S')}: {sum(len(d) for _, d in groups)}"
             f" runs in {len(groups)} groups, {'/'.join(map(str, seeds))} seeds each; split: "
             f"{split}; baseline group: {plan.baseline}"]
    if missing:
        lines.append(f"- Not done, left out: {', '.join(missing)}")
    lines += ["", "## Data", "", *data_lines([d for _, dirs in groups for d in dirs],
                                                   Path(recorded.get("workdir", "."))), "",
              "## Runs", "", "| group | run (its directory) | seed | epochs | best epoch |",
              "|---|---|---:|---:|---:|"]
    for group, dirs in groups:
        for d in dirs:
            config = json.loads((d / "config.json").read_text())
            history = json.loads((d / "training_history.json").read_text())
            best = max(history, key=lambda r: r["val_bleu"])
            lines.append(f"| {group} | [{d.name}](../{d.name}/) | {config['args'].get('seed')}"
                         f" | {len(history)} | {best['epoch']} |")
    lines += ["", f"## Results ({split})", "",
              "Mean ± standard deviation over each group's seeds; metric conventions and "
              "sacrebleu signatures under the table.", "", markdown, "",
              "LaTeX (booktabs): `results.tex`. Figure: `scores.png`, `scores.pdf`.", "",
              "## Significance", ""]
    if why_not:
        lines.append(f"Not tested: {why_not}.")
    else:
        lines += [f"Each group against the baseline, its seeds' outputs pooled (seed i beside "
                  f"seed i), {n_samples} resamples (sacrebleu's paired tests):", "",
                  "```", significance, "```", "",
                  "A difference is real when its p is below 0.05 *and* it is larger than the "
                  "spread between seeds (the ± above)."]
    return "\n".join(lines) + "\n"


def data_lines(run_dirs, workdir):
    """Each split's manifest(s), with their sha256 and sample counts, as the runs read them.
    A relative manifest path is relative to the directory the sweep was started in."""
    lines = []
    for split in ("train", "val", "test"):
        found = {}
        for d in run_dirs:
            manifest = json.loads((d / "config.json").read_text())["args"].get(f"{split}_manifest")
            if manifest and (workdir / manifest).is_file():
                digest = hashlib.sha256((workdir / manifest).read_bytes()).hexdigest()
                found.setdefault(digest, []).append(manifest)
        for digest, paths in found.items():
            rows = sum(1 for _ in open(workdir / paths[0], encoding="utf-8")) - 1
            same = f" (the same file content in {len(paths)} runs)" if len(paths) > 1 else ""
            lines.append(f"- {split}: `{paths[0]}`, {rows} samples, sha256 {digest[:16]}{same}")
    return lines or ["- (the runs' manifests are not readable from here)"]


def write_text(path, text):
    atomic_write(path, lambda f: f.write(text), binary=False)
