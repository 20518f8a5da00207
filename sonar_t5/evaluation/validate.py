"""validate_perceiver_model.py's work: translate a data set with a checkpoint and report."""
import os
import time
from pathlib import Path

from sonar_t5.common.files import atomic_write, write_json
from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.data.encoder_cache import cached_loaders
from sonar_t5.data.manifest import is_how2sign
from sonar_t5.data.synthetic import is_demo_manifest

from .generation import decoding, run_evaluation
from .metrics import (bleu_verdict, display, diversity, diversity_verdict, length_stats,
                      metric_names, translation_metrics)
from .significance import confidence_intervals
from .translate import load_translator


def validation_dataset(translator, manifest, features, *, max_frames=None, limit=None,
                       skip_missing=False):
    """A manifest and its features, at the checkpoint's --max_frames unless given."""
    return FeatureDataset(manifest, features,
                          max_frames=translator.max_frames if max_frames is None else max_frames,
                          expected_dim=translator.input_dim, limit=limit,
                          skip_missing=skip_missing, skip_missing_flag=None)


def validate_checkpoint(translator, dataset, *, batch_size=32, num_workers=0,
                        encoder_cache_dir=None, checkpoint=None):
    """-> (summary dict, ids, references, hypotheses), in the data set's order.
    encoder_cache_dir: read the encoder's states from the frozen-encoder cache there (built
    if missing); checkpoint: the path the summary names."""
    model, tokenizer, ckpt = translator.model, translator.tokenizer, translator.checkpoint
    device, precision = translator.device, translator.precision
    train_args = ckpt.get("train_args", {})
    loader = make_loader(dataset, Collator(tokenizer, train_args.get("max_target_length", 128)),
                         batch_size, shuffle=False, num_workers=num_workers)
    cache_info = None
    if encoder_cache_dir:
        (loader,), infos = cached_loaders(model, {"validation": loader}, encoder_cache_dir,
                                          device, precision)
        cache_info = infos["validation"]
    start = time.time()
    result = run_evaluation(model, loader, tokenizer, device, translator.settings,
                            precision=precision, desc="translating", across_processes=False)
    elapsed = time.time() - start
    ids = [r.id for r in dataset.rows]
    references = [r.text for r in dataset.rows]
    hypotheses = [result["hypotheses"][i] for i in range(len(dataset))]
    metrics = translation_metrics(hypotheses, references)
    div = diversity(hypotheses)
    verdict, action = bleu_verdict(metrics["bleu"], data_kind(dataset.manifest))
    summary = {
        **metrics, "num_samples": len(dataset), "diversity": div,
        "lengths": {"translations": length_stats(hypotheses),
                    "references": length_stats(references)},
        "verdict": verdict, "suggested_action": action,
        "diversity_verdict": diversity_verdict(div),
        # 95% bootstrap intervals (sacrebleu's paired bootstrap, 1000 resamples of sentences)
        "confidence_95": confidence_intervals(hypotheses, references),
        "val_loss": result["val_loss"], "cond_gap": result["cond_gap"],
        "generation": vars(translator.settings), "max_frames": dataset.max_frames,
        "samples_per_s": len(dataset) / elapsed,
        # Absolute: the table tool finds the run's config.json from any directory.
        "checkpoint": os.path.abspath(checkpoint) if checkpoint else None,
        "epoch": ckpt.get("epoch"),
        "features": os.path.abspath(dataset.features_dir),
        "manifest": os.path.abspath(dataset.manifest), "encoder_cache": cache_info,
    }
    return summary, ids, references, hypotheses


def data_kind(manifest):
    """What a verdict may compare a score with: "demo", "how2sign" or None."""
    return "demo" if is_demo_manifest(manifest) else "how2sign" if is_how2sign(manifest) \
        else None


RESULTS_DIR = "results"  # RUN/results/{val,test}/: the end of training's scores


def score_best_checkpoint(run_dir, splits, *, device, precision, batch_size, num_workers,
                          skip_missing=False, say=print):
    """The end of training: the run's best_model.pt scored on each split ({name: (features,
    manifest)}) with the validation script's defaults, each into RUN/results/NAME/ as
    validate_perceiver_model.py --output writes it. -> {name: summary}."""
    checkpoint = Path(run_dir) / "best_model.pt"
    translator = load_translator(checkpoint, device, precision)
    summaries = {}
    for name, (features, manifest) in splits.items():
        dataset = validation_dataset(translator, manifest, features, skip_missing=skip_missing)
        summary, ids, refs, hyps = validate_checkpoint(
            translator, dataset, batch_size=batch_size, num_workers=num_workers,
            checkpoint=checkpoint)
        write_results(Path(run_dir) / RESULTS_DIR / name, summary, ids, refs, hyps)
        say(f"{name}: {score_line(summary)}")
        summaries[name] = summary
    return summaries


def score_line(summary):
    """The headline metrics in one line, BLEU's and chrF's with their 95% intervals."""
    parts = []
    for name in metric_names(headline_only=True):
        interval = summary.get("confidence_95", {}).get(name)
        parts.append(f"{display(name).label} {display(name).line_format.format(summary[name])}"
                     + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else ""))
    return f"{'  '.join(parts)}  ({summary['num_samples']} sentences, " \
           f"{decoding(summary['generation'])})"


def write_results(output, summary, ids, references, hypotheses):
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "validation_summary.json", summary)
    lines = ["id\treference\ttranslation"] + [
        f"{i}\t{r}\t{h}" for i, r, h in zip(ids, references, hypotheses)]
    atomic_write(out / "translations.txt", lambda f: f.write("\n".join(lines) + "\n"),
                 binary=False)
    return out / "validation_summary.json", out / "translations.txt"


def format_report(summary, references, hypotheses, num_samples):
    div, lengths = summary["diversity"], summary["lengths"]
    rule = "=" * 70
    lines = [rule, "VALIDATION RESULTS", rule]
    for name in metric_names():  # each with its signature, where it has one
        signature = summary.get(f"{name}_signature")
        interval = summary.get("confidence_95", {}).get(name)
        lines.append(f"{display(name).label}: {summary[name]:.{display(name).decimals}f}"
                     + (f" (95% CI {interval[0]:.2f}-{interval[1]:.2f})" if interval else "")
                     + (f"   ({signature})" if signature else ""))
    settings = summary["generation"]
    lines += [f"samples: {summary['num_samples']}   ({summary['samples_per_s']:.1f} samples/s)",
              f"decoding: {decoding(settings)}   ("
              + ", ".join(f"{k} {v}" for k, v in settings.items()) + ")",
             f"validation loss: {summary['val_loss']:.4f}   conditioning gap: "
             f"{summary['cond_gap']:.4f} (near 0 = input ignored)",
             "", "MODE COLLAPSE CHECK",
             f"  total translations: {div['total']}",
             f"  unique translations: {div['unique']}",
             f"  diversity ratio: {div['unique_ratio']:.1%}",
             f"  most common: '{div['most_common']}' ({div['most_common_count']}x, "
             f"{div['most_common_pct']:.1f}%)",
             f"  distinct-1: {div['distinct_1']:.3f}   distinct-2: {div['distinct_2']:.3f}",
             f"  empty translations: {div['empty']}",
             "", "LENGTH STATISTICS (words)"]
    for name in ("translations", "references"):
        s = lengths[name]
        lines.append(f"  {name:<12}: mean {s['mean']:.1f}  std {s['std']:.1f}  "
                     f"min {s['min']}  max {s['max']}")
    lines += ["", f"SAMPLE TRANSLATIONS (first {min(num_samples, len(references))})"]
    for i, (ref, hyp) in enumerate(zip(references[:num_samples], hypotheses[:num_samples]), 1):
        lines += [f"  [{i}] Reference:   {ref}", f"      Translation: {hyp}"]
    lines += ["", "VERDICT",
              f"  BLEU {summary['bleu']:.2f}: {summary['verdict'].upper()} - "
              f"{summary['suggested_action']}",
              f"  {summary['diversity_verdict']}", rule]
    return "\n".join(lines)
