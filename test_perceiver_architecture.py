#!/usr/bin/env python
"""Architecture smoke test: run it first. Prints a ✅ line per real check, exits 1 on a ❌.

    python test_perceiver_architecture.py [--device cpu] [--t5_model t5-small|t5-tiny|...]
                                          [--bridge perceiver|projection]
                                          [--sonar_checkpoint ENCODER.pt]
"""
import argparse
import sys
import time

from sonar_t5.common.cpu import wait_politely_if_shared
from sonar_t5.common.errors import quiet_ctrl_c_until_main

if __name__ == "__main__":  # the imports take seconds: Ctrl-C then exits without a traceback
    quiet_ctrl_c_until_main()
wait_politely_if_shared()  # before torch loads: OpenMP reads its wait policy once

import torch

from sonar_t5.common.cli import check_flag_ranges
from sonar_t5.common.device import resolve_device
from sonar_t5.common.errors import UserError, cli_main
from sonar_t5.models import BRIDGES, SONAR_DIM, T5_PRESETS
from sonar_t5.models.build import build_encoder, build_model, load_t5_and_tokenizer
from sonar_t5.models.bridges import build_bridge
from sonar_t5.models.sonar_t5 import SonarT5Config
from sonar_t5.training.defaults import defaults_line, fill_defaults

SENTENCES = ["i'm going to show you how to fold the paper carefully",
             "now we are going to cut the edges"]


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    p.add_argument("--t5_model", default=None,
                   help="hub name, local directory, or a from-scratch preset: "
                        f"{', '.join(T5_PRESETS)} (default: the guide's t5-small, in its "
                        "shape from scratch so that it works offline, with t5-small's bridge)")
    p.add_argument("--bridge", default="perceiver", choices=BRIDGES)
    p.add_argument("--num_latents", type=int, default=None,
                   help="prefix tokens (default: as training chooses for --t5_model: 64 for a "
                        "pretrained decoder, the width / 16 for a preset)")
    p.add_argument("--hidden_dim", type=int, default=None,
                   help="bridge width (default: 768 for a pretrained decoder, the decoder's "
                        "width for a preset)")
    p.add_argument("--num_heads", type=int, default=None,
                   help="bridge attention heads (default: 8 for a pretrained decoder, the "
                        "width / 64 for a preset, at least 4)")
    p.add_argument("--num_layers", type=int, default=2, help="Perceiver layers")
    p.add_argument("--sonar_checkpoint",
                   help="check this SONAR encoder file too (ssvp_slt's SONAR ASL encoder, a "
                        "converted one, or this toolkit's feature encoder); default: a small "
                        "feature encoder from scratch")
    return p


# Without --t5_model: the guide's model, t5-small, as its shape with random weights (offline).
GUIDE_DECODER, ITS_STAND_IN = "t5-small", "scratch-t5-small"


def parse_args(argv):
    args = build_parser().parse_args(argv)
    decoder = args.t5_model or GUIDE_DECODER
    args.t5_model = args.t5_model or ITS_STAND_IN
    fill_defaults(args, decoder)  # the bridge training chooses for that decoder
    if decoder != args.t5_model:
        args.defaults["t5_model"] = f"{decoder} (as {args.t5_model}: its shape, offline)"
    check_flag_ranges(args)  # the ranges every script shares (sonar_t5/common/cli.py)
    return args


ENCODER_NAMES = {"sonar_asl": "ssvp_slt SONAR ASL encoder", "feature": "feature encoder from "
                 "scratch", "identity": "identity (features are SONAR embeddings)"}


def describe(encoder):
    c = encoder.config
    shape = (f"d_model {c.d_model}, {c.num_layers} + {c.num_decoder_layers} layers"
             if c.kind == "sonar_asl" else f"d_model {c.d_model}, {c.num_layers} layers")
    params = sum(p.numel() for p in encoder.parameters())
    return f"{ENCODER_NAMES[c.kind]}: {c.input_dim}-d features, {shape}, {params:,} parameters"


class Checks:
    """Runs each check; a failure prints ❌ with the reason and stops with exit 1."""

    def __call__(self, name, fn):
        try:
            detail = fn()
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as error:  # the smoke test reports every failure, whatever it is
            print(f"❌ {name} FAILED: {type(error).__name__}: {error}")
            sys.exit(1)
        print(f"✅ {name}" + (f" {detail}" if detail else ""))


def require(condition, message):
    if not condition:
        raise AssertionError(message)


@cli_main
def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(defaults_line(args.defaults))
    check, start = Checks(), time.time()
    t5, tokenizer = load_t5_and_tokenizer(args.t5_model, SENTENCES * 10, vocab_size=64)
    d_model, batch = t5.config.d_model, 2
    cfg = SonarT5Config(encoder={}, t5={}, bridge=args.bridge, num_latents=args.num_latents,
                        num_layers=args.num_layers, hidden_dim=args.hidden_dim,
                        num_heads=args.num_heads)
    bridge = build_bridge(cfg, d_model, SONAR_DIM).to(device)
    name = BRIDGES[args.bridge].title
    check(f"{name} created", lambda: f"({sum(p.numel() for p in bridge.parameters()):,} "
                                     "parameters)")

    outputs = {}

    def forward():
        outputs["pooled"] = bridge(torch.randn(batch, SONAR_DIM, device=device))
        mask = torch.ones(batch, 7, dtype=torch.bool, device=device)
        mask[1, 4:] = False
        outputs["tokens"] = bridge(torch.randn(batch, 7, SONAR_DIM, device=device), mask)
        require(all(torch.isfinite(o).all() for o in outputs.values()), "non-finite output")
    check("Forward pass successful", forward)

    def shape():
        expected = (batch, args.num_latents, d_model)
        for kind, out in outputs.items():
            require(tuple(out.shape) == expected, f"{kind}: {tuple(out.shape)} != {expected}")
        return f"{expected}"
    check("Output shape correct", shape)

    if args.sonar_checkpoint:
        encoder = build_encoder(args.sonar_checkpoint, None)
        input_dim = encoder.config.input_dim

        def encoder_outputs():
            features = torch.randn(batch, 9, input_dim)
            mask = torch.ones(batch, 9, dtype=torch.bool)
            mask[1, 5:] = False
            with torch.no_grad():
                pooled, tokens = encoder.eval()(features, mask)
            require(tuple(pooled.shape) == (batch, SONAR_DIM), f"pooled {tuple(pooled.shape)}")
            require(tuple(tokens.shape) == (batch, 9, encoder.token_dim),
                    f"tokens {tuple(tokens.shape)}")
            require(torch.isfinite(pooled).all() and torch.isfinite(tokens).all(), "non-finite")
            return f"({describe(encoder)}; pooled {tuple(pooled.shape)}, tokens " \
                   f"{tuple(tokens.shape)})"
        check("SONAR encoder checkpoint loaded", encoder_outputs)
    else:
        input_dim = 64
        encoder = build_encoder(None, input_dim=input_dim, d_model=128, num_layers=2,
                                num_heads=4)
    # pooled: every encoder parameter feeds the prefix, so every one must get a gradient
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder, t5_model=args.t5_model,
                        bridge=args.bridge, resampler_input="pooled",
                        num_latents=args.num_latents, num_layers=args.num_layers,
                        hidden_dim=args.hidden_dim, num_heads=args.num_heads).to(device)
    features = torch.randn(batch, 12, input_dim, device=device)
    mask = torch.ones(batch, 12, dtype=torch.bool, device=device)
    labels = torch.tensor([tokenizer.encode(SENTENCES[0])] * batch, device=device)

    def model_working():
        # A few steps on one sentence, so that "generates text" means text, not padding. The
        # bridge and decoder learn it; stepping a SONAR-sized encoder too would take minutes.
        optimizer = torch.optim.AdamW([*model.bridge.parameters(), *model.t5.parameters()],
                                      lr=1e-3)
        for _ in range(30):
            loss = model(features, mask, labels)
            require(torch.isfinite(loss), f"loss is {loss.item()}")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        ids = model.generate(model.prefix(features, mask), num_beams=2, max_new_tokens=12)
        text = tokenizer.decode(ids[0, 1:])
        require(text.strip(), "generated an empty sentence")
        model.train()
        return f"(encoder: {ENCODER_NAMES[encoder.config.kind]}; loss {loss.item():.3f}, " \
               f"generated: '{text}')"
    check("Model working", model_working)

    def gradients():
        model.zero_grad()
        model(features, mask, labels).backward()
        for part in ("encoder", "bridge", "t5"):
            for pname, p in getattr(model, part).named_parameters():
                require(p.grad is not None and torch.isfinite(p.grad).all(),
                        f"{part}.{pname} has no finite gradient")
        model.zero_grad(set_to_none=True)
        model.freeze_encoder()
        model(features, mask, labels).backward()
        require(all(p.grad is None for p in model.encoder.parameters()),
                "a frozen encoder received gradients")
        require(not model.encoder.training, "a frozen encoder is in training mode")
        counts = model.parameter_counts()
        return f"({counts['trainable']:,} trainable of {counts['total']:,})"
    check("Gradients computed correctly", gradients)
    print(f"✅ ALL TESTS PASSED! ({time.time() - start:.1f}s on {device})")


if __name__ == "__main__":
    main()
