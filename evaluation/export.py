"""Export a trained checkpoint as a folder others can load, with a model card.

    python -m evaluation.export runs/x/best_model.pt exported/x
    python validate_perceiver_model.py --checkpoint exported/x --features ... --manifest ...

The folder has Hugging Face's layout: model.safetensors (weights only, no pickle),
config.json, spiece.model, generation_config.json and README.md, the model card: what it
was trained on, its validation BLEU with the sacrebleu signature, chrF, the scores of the end
of training (RUN/results/, val and test, with 95% intervals) where they are, and the settings.
"""
import argparse
from pathlib import Path

from common.errors import UserError, cli_main
from common.schemas import read_run_config, read_summary
from models.checkpoint import GENERATION_KEYS, load_model, save_exported

from .generation import GenerationSettings, decoding
from .metrics import display, epoch_metrics, metric_names, translation_metrics


def export(checkpoint, out_dir):
    model, tokenizer, ckpt = load_model(checkpoint)
    if "train_args" not in ckpt or not ckpt.get("history"):
        raise UserError("the checkpoint has no training record to describe", str(checkpoint),
                        "export best_model.pt or last_model.pt of a training run")
    train_args = ckpt["train_args"]
    run_config_path = Path(checkpoint).parent / "config.json"
    run_config = read_run_config(run_config_path) if run_config_path.is_file() else {}
    record = next((r for r in ckpt["history"] if r["epoch"] == ckpt.get("epoch")),
                  ckpt["history"][-1])
    settings = GenerationSettings(**{k: train_args[k] for k in GENERATION_KEYS
                                     if train_args.get(k) is not None})
    info = {"train_args": train_args, "epoch": record["epoch"],
            "validation": {**epoch_metrics(record), "cond_gap": record.get("cond_gap"),
                           "val_loss": record.get("val_loss"),
                           **{k: v for k, v in record.items() if k.endswith("_signature")}},
            "data": run_config.get("data", {}), "parameters": model.parameter_counts(),
            "exported_from": str(Path(checkpoint).resolve())}
    scored = end_of_training_scores(checkpoint)
    info["scored"] = {split: {k: v for k, v in summary.items()
                              if k in translation_metrics(["x"], ["x"]) or k in (
                                  "confidence_95", "num_samples", "generation", "manifest")}
                      for split, summary in scored.items()}
    card = model_card(Path(out_dir).name, model, train_args, record, run_config, settings,
                      scored)
    return save_exported(out_dir, model, tokenizer, info, vars(settings), card)


def end_of_training_scores(checkpoint):
    """{split: validation summary} of RUN/results/SPLIT/ written for this very checkpoint
    when its training ended (none for last_model.pt, or a checkpoint moved elsewhere)."""
    path = Path(checkpoint).resolve()
    found = {}
    for summary_path in sorted(path.parent.glob("results/*/validation_summary.json")):
        summary = read_summary(summary_path)
        if Path(summary.get("checkpoint") or "").resolve() == path:
            found[summary_path.parent.name] = summary
    return found


def scored_rows(scored):
    """The model card's rows for the end-of-training scores: each headline metric per split,
    BLEU and chrF with their 95% intervals."""
    rows = []
    for split, summary in scored.items():
        for name in metric_names(headline_only=True):
            interval = summary.get("confidence_95", {}).get(name)
            value = f"{summary[name]:.{display(name).decimals}f}" + (
                f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")
            rows.append((f"{split} {display(name).label} ({summary['num_samples']} sentences, "
                         f"{decoding(summary['generation'])})", value))
    return rows


def model_card(name, model, args, record, run_config, settings, scored=None):
    config = model.config
    data = run_config.get("data", {})
    # Older runs did not record the signatures; they are fixed by this code's settings (one
    # reference, sacrebleu's defaults), so they are computed the same way here.
    signatures = {**translation_metrics(["x"], ["x"]), **record}
    counts = model.parameter_counts()
    encoder = config.encoder.get("kind", "feature")
    rows = []
    for name, value in epoch_metrics(record).items():
        signature = signatures.get(f"{name}_signature")
        signature = f" ({signature})".replace("|", "\\|") if signature else ""  # in a table
        rows.append((f"validation {display(name).label}",
                     f"{value:.{display(name).decimals}f}{signature}"))
    rows += [("conditioning gap", f"{record['cond_gap']:.3f} nats/token"),
             ("epoch", f"{record['epoch']} of {args.get('epochs')}")]
    settings_rows = [
        ("encoder", f"{encoder}{' (frozen)' if args.get('freeze_encoder') else ''}, "
                    f"from {args.get('sonar_checkpoint') or 'scratch'}"),
        ("bridge", f"{config.bridge}, {config.num_latents} latents, {config.num_layers} "
                   f"layers, width {config.hidden_dim}, reads the {config.resampler_input} "
                   "states"),
        ("decoder", f"T5 `{config.t5_model}`"),
        ("parameters", ", ".join(f"{k} {v:,}" for k, v in counts.items())),
        ("optimisation", f"AdamW, learning rate {args.get('learning_rate')}, "
                         f"{args.get('warmup_steps')} warm-up steps, batch "
                         f"{args.get('batch_size')}, label smoothing "
                         f"{args.get('label_smoothing')}, seed {args.get('seed')}"),
        ("generation", ", ".join(f"{k} {v}" for k, v in vars(settings).items())),
        ("max_frames", str(config.max_frames or "all")),
    ]
    lines = [
        f"# {name}",
        "",
        "A sign-language translation model made with sonar-t5: pre-extracted feature "
        "sequences (e.g. How2Sign video features) go through a SONAR-style encoder to a "
        "Perceiver Resampler prefix, and a T5 decoder writes the English sentence.",
        "",
        "## Data",
        "",
        f"- training: `{args.get('train_manifest')}` ({data.get('train_samples', '?')} "
        f"samples, features `{args.get('train_features')}`, {data.get('feature_dim', '?')}-d)",
        f"- validation: `{args.get('val_manifest')}` ({data.get('val_samples', '?')} samples)",
        "",
        *(["## Results (the best checkpoint scored when training ended; 95% intervals)", "",
           "| measure | value |", "|---|---|",
           *[f"| {k} | {v} |" for k, v in scored_rows(scored)], ""] if scored else []),
        "## Results (validation set, during training)",
        "",
        "| measure | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in rows],
        "",
        "## Training settings",
        "",
        "| setting | value |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in settings_rows],
        "",
        "## Use",
        "",
        "```bash",
        f"python validate_perceiver_model.py --checkpoint {name} --features FEATURES_DIR "
        "--manifest MANIFEST.tsv --output results",
        "```",
        "",
        "Files: `model.safetensors` (weights), `config.json` (model configuration and training "
        "arguments), `spiece.model` (SentencePiece), `generation_config.json` (generate() "
        "defaults), this card.",
        "",
    ]
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m evaluation.export",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="best_model.pt or last_model.pt of a training run")
    p.add_argument("out_dir", help="the folder to write (must not exist, or be empty)")
    args = p.parse_args(argv)
    out = export(args.checkpoint, args.out_dir)
    print(f"wrote {out}/: model.safetensors, config.json, spiece.model, "
          "generation_config.json, README.md")


if __name__ == "__main__":
    main()
