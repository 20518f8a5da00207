"""Export a trained checkpoint as a folder others can load, with a model card.

    python -m sonar_t5.evaluation.export runs/x/best_model.pt exported/x
    python validate_perceiver_model.py --checkpoint exported/x --features ... --manifest ...

The folder has Hugging Face's layout: model.safetensors (weights only, no pickle),
config.json, spiece.model, generation_config.json and README.md, the model card: what it
was trained on, its validation BLEU with the sacrebleu signature, chrF, the scores of the end
of training (RUN/results/, val and test, with 95% intervals) where they are, and the settings.
"""
import argparse
from pathlib import Path

from sonar_t5.common.errors import UserError, cli_main
from sonar_t5.common.schemas import read_run_config, read_summary
from sonar_t5.models import BRIDGES
from sonar_t5.models.bridges import layer_count
from sonar_t5.models.checkpoint import load_model, save_exported

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
    # The checkpoint's one default decoding: what validating it uses unless told otherwise
    # (and what the end-of-training scores used), not the quick decoding of each epoch's
    # validation. generation_config.json says it to transformers, the card to a reader.
    settings = GenerationSettings.for_scoring(train_args)
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


ENCODER_TITLES = {"sonar_asl": "ssvp_slt's SONAR ASL encoder", "feature": "a feature encoder",
                  "identity": "no encoder (the features are SONAR embeddings)"}
BRIDGE_INPUTS = {"pooled": "the pooled sentence embedding",
                 "tokens": "the encoder's token states"}


def model_card(name, model, train_args, record, run_config, settings, scored=None):
    """The exported folder's README.md. name: the folder's name, the model's title.
    settings: the checkpoint's default decoding (generation_config.json's)."""
    config = model.config
    data = run_config.get("data", {})
    # Older runs did not record the signatures; they are fixed by this code's settings (one
    # reference, sacrebleu's defaults), so they are computed the same way here.
    signatures = {**translation_metrics(["x"], ["x"]), **record}
    counts = model.parameter_counts()
    encoder = ENCODER_TITLES.get(config.encoder.get("kind", "feature"), "an encoder")
    bridge = BRIDGES[config.bridge].title
    reads = BRIDGE_INPUTS.get(config.resampler_input, config.resampler_input)
    layers = layer_count(config.bridge, config.num_layers)
    rows = []
    for metric, value in epoch_metrics(record).items():
        signature = signatures.get(f"{metric}_signature")
        signature = f" ({signature})".replace("|", "\\|") if signature else ""  # in a table
        rows.append((f"validation {display(metric).label}",
                     f"{value:.{display(metric).decimals}f}{signature}"))
    rows += [("conditioning gap", f"{record['cond_gap']:.3f} nats/token"),
             ("epoch", f"{record['epoch']} of {train_args.get('epochs')}"),
             ("decoding", f"{decoding(vars(GenerationSettings.from_args(train_args)))} "
                          "(each epoch's validation during training)")]
    settings_rows = [
        ("encoder", f"{encoder}{', frozen' if train_args.get('freeze_encoder') else ''}, from "
                    f"{train_args.get('sonar_checkpoint') or 'scratch'}"),
        ("input", f"{data.get('feature_dim', '?')}-d feature sequences, at most "
                  f"{config.max_frames or 'all'} frames"),
        ("bridge", f"{bridge}: {config.num_latents} prefix tokens, {layers} "
                   f"layer{'s' * (layers != 1)}, width {config.hidden_dim}, reads {reads}"),
        ("decoder", f"T5 `{config.t5_model}`"),
        ("parameters", ", ".join(f"{k} {v:,}" for k, v in counts.items())),
        ("optimisation", f"AdamW, learning rate {train_args.get('learning_rate')}, "
                         f"{train_args.get('warmup_steps')} warm-up steps, batch "
                         f"{train_args.get('batch_size')}, label smoothing "
                         f"{train_args.get('label_smoothing')}, seed {train_args.get('seed')}"),
        ("decoding", f"{decoding(vars(settings))}: "
                     + ", ".join(f"{k} {v}" for k, v in vars(settings).items())
                     + " (generation_config.json; what validating this folder uses)"),
    ]
    lines = [
        f"# {name}",
        "",
        "A sign-language translation model made with sonar-t5: pre-extracted feature "
        f"sequences (e.g. How2Sign video features) go through {encoder}; a {bridge} turns "
        f"{reads} into {config.num_latents} prefix tokens, and a T5 decoder writes the "
        "English sentence.",
        "",
        "## Data",
        "",
        f"- training: `{train_args.get('train_manifest')}` ({data.get('train_samples', '?')} "
        f"samples, features `{train_args.get('train_features')}`, {data.get('feature_dim', '?')}-d)",
        f"- validation: `{train_args.get('val_manifest')}` ({data.get('val_samples', '?')} samples)",
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
        "arguments), `spiece.model` (SentencePiece), `generation_config.json` (the default "
        "decoding above, as transformers' GenerationConfig), this card.",
        "",
    ]
    return "\n".join(lines)


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m sonar_t5.evaluation.export",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="best_model.pt or last_model.pt of a training run")
    p.add_argument("out_dir", help="the folder to write (must not exist, or be empty)")
    args = p.parse_args(argv)
    out = export(args.checkpoint, args.out_dir)
    print(f"wrote {out}/: model.safetensors, config.json, spiece.model, "
          "generation_config.json, README.md")


if __name__ == "__main__":
    main()
