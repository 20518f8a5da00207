"""The defaults that depend on the T5 decoder: pretrained (t5-small, a local save_pretrained
directory) or trained from scratch (a preset: t5-tiny, scratch-*; the only way this toolkit
trains a decoder from scratch).

A pretrained decoder keeps the original guide's settings. A decoder trained from scratch
learns nothing useful with them: on the realistic text benchmark (docs/real_text.md, 6,400
sentences, 15 CPU-minutes) they scored BLEU 3.69 with 46% unique outputs, where the settings
below scored 7.26 with 99%; held-out text confirmed them. Flags the user sets (command line,
--config file, --demo) always win; these fill only what is left unset, and the run says which
it chose (its start line, config.json's args.defaults).
"""
from sonar_t5.models.t5_decoder import T5_PRESETS, is_preset

# Today's settings for a pretrained decoder, as the original guide's commands expect them.
PRETRAINED = dict(learning_rate=1e-4, warmup_steps=500, batch_size=16, hidden_dim=768,
                  num_latents=64, num_heads=8, encoder_d_model=512, encoder_layers=4,
                  vocab_size=8000)  # vocab_size: unused, a pretrained T5 has its own
DEPENDENT_FLAGS = tuple(PRETRAINED)

# From scratch: vocabulary pieces per word of training text. The benchmark's 44,836 words
# (6,400 sentences) did best with 1,000 pieces (BLEU 2.3 in 5 minutes, vs 2.1 with 500 and
# 1.1 with 2,000): fewer pieces than that leave each one too few examples to learn from.
WORDS_PER_PIECE = 45
MIN_VOCAB, MAX_VOCAB = 200, 8000
# From scratch: warm-up over the first epoch, at most this share of the planned steps.
WARMUP_SHARE = 0.05


def scratch_defaults(t5_model):
    """A from-scratch preset's defaults, sized from its width (t5-tiny: 128). warmup_steps
    and vocab_size are chosen from the data (None here)."""
    width = T5_PRESETS[t5_model]["d_model"]
    return dict(learning_rate=1e-3,  # 10x a pretrained decoder's
                warmup_steps=None, batch_size=32,
                # the bridge as wide as the decoder, a short prefix: 128 wide x 16 latents
                # trained 355 samples/s on one core where 768 x 64 trained 28
                hidden_dim=width, num_latents=max(16, width // 16), num_heads=max(4, width // 64),
                # a feature encoder trained beside it: as wide, one layer (512 x 4 ran 32
                # samples/s and collapsed; 1 layer beat 2 on frame features, 11.3 vs 9.3 BLEU)
                encoder_d_model=width, encoder_layers=1,
                vocab_size=None)


def decoder_defaults(t5_model):
    """{flag: default} for this decoder (None: chosen from the data)."""
    return scratch_defaults(t5_model) if is_preset(t5_model) else dict(PRETRAINED)


def fill_defaults(args, t5_model=None):
    """Set the decoder-dependent flags left unset (None) among those args has, for t5_model
    (default: args.t5_model), and record the choice in args.defaults: {"t5_model",
    "from_scratch", "chosen": {flag: value}} (None: the data decides, choose_vocab_size and
    choose_warmup_steps)."""
    t5_model = t5_model or args.t5_model
    values = decoder_defaults(t5_model)
    chosen = {flag: values[flag] for flag in DEPENDENT_FLAGS
              if hasattr(args, flag) and getattr(args, flag) is None}
    vars(args).update(chosen)
    args.defaults = {"t5_model": t5_model, "from_scratch": is_preset(t5_model),
                     "chosen": chosen}


def choose_vocab_size(args, texts):
    """From scratch, unset --vocab_size: one piece per WORDS_PER_PIECE words of training text
    (to the hundred), within MIN_VOCAB..MAX_VOCAB and at least twice the distinct characters;
    SentencePiece stops at what the text supports (training keeps that size). -> the size
    asked of SentencePiece."""
    if args.vocab_size is None:
        words = sum(len(text.split()) for text in texts)
        characters = len(set("".join(texts)))
        size = round(words / WORDS_PER_PIECE, -2)
        args.vocab_size = int(max(MIN_VOCAB, 2 * characters, min(MAX_VOCAB, size)))
        args.defaults["chosen"]["vocab_size"] = args.vocab_size
    return args.vocab_size


def choose_warmup_steps(args, steps_per_epoch):
    """From scratch, unset --warmup_steps: the first epoch, at most WARMUP_SHARE of the planned
    steps (--epochs of them; with --time_budget the plan comes after the first epoch, and the
    warm-up is that epoch)."""
    if args.warmup_steps is None:
        planned = steps_per_epoch * args.epochs
        args.warmup_steps = steps_per_epoch if args.time_budget else \
            max(1, min(steps_per_epoch, round(WARMUP_SHARE * planned)))
        args.defaults["chosen"]["warmup_steps"] = args.warmup_steps
    return args.warmup_steps


def defaults_line(defaults):
    """The start line: which defaults the run chose, for which decoder, and why."""
    scratch = defaults["from_scratch"]
    chosen = {flag: value for flag, value in defaults["chosen"].items()
              if scratch or flag != "vocab_size"}  # a pretrained T5 brings its vocabulary
    kind = "a decoder trained from scratch" if scratch else "a pretrained decoder"
    if not chosen:
        return f"defaults for {defaults['t5_model']}, {kind}: none needed (every flag set)"
    shown = " ".join(f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}"
                     for flag, value in chosen.items())
    why = ("what learned on real text within a CPU budget" if scratch
           else "the original guide's settings")
    return f"defaults for {defaults['t5_model']}, {kind}: {shown} ({why}; flags you set win)"
