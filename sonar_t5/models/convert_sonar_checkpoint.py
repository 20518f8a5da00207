"""Convert an ssvp_slt SONAR ASL encoder checkpoint into a weights-only file, once.

ssvp_slt's training checkpoints hold optimizer state and config objects (OmegaConf,
argparse) beside the weights. torch.load(weights_only=True) refuses those, and this toolkit
never falls back to full unpickling on its own: unpickling can run code the file carries.
For a file you trust:

    python -m sonar_t5.models.convert_sonar_checkpoint checkpoint.pth sonar_encoder.pt --trust_pickle

unpickles it in full (only with --trust_pickle, and says so), keeps the encoder weights alone,
reads the architecture from their shapes, and writes
{'kind': 'sonar_asl_encoder', 'config', 'state_dict'}, which --sonar_checkpoint loads
weights-only like any other file. A file that holds only tensors needs no flag.
"""
import argparse
from dataclasses import asdict
from pathlib import Path

import torch

from sonar_t5.common.checkpoint_io import load_checkpoint, save_checkpoint
from sonar_t5.common.errors import UserError, cli_main

from .encoders import CONVERTED_KIND, read_sonar_asl_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="ssvp_slt's checkpoint (.pth)")
    p.add_argument("output", help="the weights-only file to write (.pt)")
    p.add_argument("--trust_pickle", action="store_true",
                   help="unpickle the checkpoint in full, which runs any code it carries: only "
                        "for files from a source you trust")
    return p.parse_args(argv)


def read_trusted(path):
    """Full unpickling, for --trust_pickle alone."""
    print(f"--trust_pickle: unpickling {path} in full (this runs any code the file carries)")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as error:
        raise UserError(f"unpickling needs the module '{error.name}' that the file's objects "
                        "come from", str(path), f"pip install {error.name.split('.')[0]}, "
                                                "then run this again") from None
    except Exception as error:  # whatever pickle/zipfile raise: the file is damaged
        raise UserError(f"cannot unpickle the checkpoint ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:80] if str(error) else ''})",
                        str(path), "use another copy of the file") from None


@cli_main
def main(argv=None):
    args = parse_args(argv)
    out = Path(args.output)
    if out.exists():
        raise UserError("output file exists", str(out), "choose another path; nothing was "
                                                         "overwritten")
    if not out.parent.is_dir():
        raise UserError("output directory not found", str(out.parent), "create it first")
    if args.trust_pickle:
        ckpt = read_trusted(args.checkpoint)
    else:
        ckpt = load_checkpoint(args.checkpoint, refused_fix=(
            "add --trust_pickle to unpickle it in full, only if you trust the file's source"))
    found = read_sonar_asl_weights(args.checkpoint, ckpt) if isinstance(ckpt, dict) else None
    if found is None:
        raise UserError("no ssvp_slt SONAR ASL encoder weights in the checkpoint (looked under "
                        "student, model, model_state and the top level)", args.checkpoint,
                        "pass the checkpoint of ssvp_slt's SONAR encoder training")
    config, state_dict = found
    save_checkpoint({"kind": CONVERTED_KIND, "config": asdict(config), "state_dict": state_dict},
                    out)
    params = sum(v.numel() for k, v in state_dict.items()
                 if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"))
    print(f"wrote {out}: SONAR ASL encoder, d_model {config.d_model}, {config.num_layers} + "
          f"{config.num_decoder_layers} layers, {config.num_heads} heads, d_ff {config.d_ff}"
          f"{' gated' if config.gated else ''}, {config.input_dim}-d features, "
          f"{params / 1e6:.1f}M parameters; pass it as --sonar_checkpoint")


if __name__ == "__main__":
    main()
