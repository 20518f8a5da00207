"""The report's attention section: a checkpoint's Perceiver attention over the frames of the
sentences a user picks (the figure validate_perceiver_model.py --attention_plot writes)."""
from pathlib import Path

from sonar_t5.common.errors import UserError

from ..attention import attention_figure, attention_source, check_has_attention_map, frame_attention
from ..translate import load_translator
from ..validate import validation_dataset
from .page import data_uri

DEFAULT_COUNT = 3  # sentences shown when --attention_ids names none


def attention_maps(checkpoint, ids, systems, *, picked=None, features=None, manifest=None,
                   device="auto"):
    """-> [{"id", "uri"}] for the picked ids (default: the first sentences), read from
    features and manifest or from the paths the summary of the system the checkpoint scored
    names (else the first system's); each titled with the checkpoint's own translation."""
    system = next((s for s in systems if s.summary.get("checkpoint") and
                   Path(s.summary["checkpoint"]).resolve() == Path(checkpoint).resolve()),
                  systems[0])
    features = features or system.summary.get("features")
    manifest = manifest or system.summary.get("manifest")
    if not features or not manifest:
        raise UserError("--checkpoint needs the sentences' features, and no "
                        "validation_summary.json beside the outputs names them",
                        str(system.files[0]),
                        "give --features DIR and --manifest FILE")
    picked = picked or ids[:DEFAULT_COUNT]
    unknown = [i for i in picked if i not in ids]
    if unknown:
        raise UserError(f"--attention_ids names {unknown[0]!r}, not a sentence of these "
                        "outputs", str(system.files[0]), "pick ids from the report's table")
    translator = load_translator(checkpoint, device=device)
    check_has_attention_map(translator.model, checkpoint, "--checkpoint")
    dataset = validation_dataset(translator, manifest, features)
    where = {row.id: index for index, row in enumerate(dataset.rows)}
    missing = [i for i in picked if i not in where]
    if missing:
        raise UserError(f"sentence {missing[0]!r} has no feature file", f"manifest {manifest}, "
                        f"features {features}", "give the --features and --manifest it was "
                        "scored on")
    what = attention_source(translator.model.config)
    maps = []
    for sample_id in picked:
        item = dataset[where[sample_id]]
        weights = frame_attention(translator.model, item["inputs"], translator.device,
                                  translator.precision)
        translation = translator.translate([item["inputs"]])[0]
        maps.append({"id": sample_id, "uri": data_uri(
            attention_figure(weights, item["text"], translation, what))})
    return maps
