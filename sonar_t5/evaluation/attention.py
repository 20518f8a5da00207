"""What the Perceiver looks at: each latent's attention over the input frames, per sample.

validate_perceiver_model.py --attention_plot N writes, for the first N samples of the
manifest, OUTPUT/attention/<id>.png (latents as rows, frames as columns: the last Perceiver
layer's attention, averaged over heads, with the reference and the translation in the title)
and <id>.npy (that matrix, to draw it another way). An id too long for a file name is cut and
ends with a hash of the whole id.
"""
import hashlib
import textwrap
from pathlib import Path

import numpy as np
import torch

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import atomic_write, check_output_dir_usable
from sonar_t5.common.precision import autocast
from sonar_t5.models import BRIDGES

from .report import plt  # matplotlib with the file-only backend report.py sets


def check_attention_plot(model, checkpoint, out_dir):
    """Before any translation: only a Perceiver reading token states has one attention
    weight per frame, and OUT_DIR/attention/ must be a directory that can be made."""
    check_has_attention_map(model, checkpoint, "--attention_plot")
    check_output_dir_usable(Path(out_dir) / "attention", "--output's attention/")


def check_has_attention_map(model, checkpoint, flag):
    """Only a bridge with an attention map that reads token states has one weight a frame."""
    bridge = model.config.bridge
    if not BRIDGES[bridge].attention_map or model.config.resampler_input != "tokens":
        raise UserError(f"{flag} needs a bridge with an attention map (" + ", ".join(
            name for name, b in BRIDGES.items() if b.attention_map) + ") that reads the "
            f"encoder's token states; this model's bridge is {bridge} reading the "
            f"{model.config.resampler_input} embedding", str(checkpoint),
            "use a checkpoint trained with --resampler_input tokens")


MAX_NAME_BYTES = 200  # of a file name's stem: file systems allow 255 bytes in all


def file_stem(sample_id):
    """A file name for a sample id: '/' made '_', and an id too long for a file name cut,
    with a hash of the whole id so that two long ids stay two files."""
    name = sample_id.replace("/", "_")
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha1(sample_id.encode()).hexdigest()[:12]
    return f"{name.encode()[:MAX_NAME_BYTES - 13].decode(errors='ignore')}-{digest}"


@torch.no_grad()
def frame_attention(model, features, device, precision="fp32"):
    """features (T, D) of one sample -> (num_latents, T) numpy: the last Perceiver layer's
    attention from each latent to each frame, averaged over heads. (Each latent also attends
    to the latents, which the Perceiver keeps among its keys: a row sums to at most 1.)"""
    features = features.to(device)[None]
    mask = torch.ones(features.shape[:2], dtype=torch.bool, device=device)
    with autocast(device, precision):
        states, states_mask = model.encode(features, mask)
        _, attentions = model.bridge(states, states_mask, return_attention=True)
    frames = states.shape[1]
    return attentions[-1][0].float().mean(0)[:, :frames].cpu().numpy()  # (L, T)


def plot_attention(attention, reference, translation, output, what):
    """what: which attention this is, for the colour bar's label."""
    fig = attention_figure(attention, reference, translation, what)
    atomic_write(output, lambda f: fig.savefig(f, dpi=120, format="png"))
    plt.close(fig)


def attention_figure(attention, reference, translation, what):
    """(latents, frames) weights -> the figure: latents as rows, frames as columns."""
    latents, frames = attention.shape
    fig, ax = plt.subplots(figsize=(max(6.0, min(frames / 12, 16.0)), max(3.0, latents / 6)))
    image = ax.imshow(attention, aspect="auto", interpolation="nearest", cmap="viridis")
    fig.colorbar(image, ax=ax, label=f"attention weight\n({what})")
    ax.set(xlabel="input frame", ylabel="latent")
    for axis in (ax.xaxis, ax.yaxis):
        axis.get_major_locator().set_params(integer=True)
    wrap = lambda label, text: textwrap.shorten(f"{label}: {text}", 110)  # noqa: E731
    ax.set_title(f"{wrap('reference', reference)}\n{wrap('translation', translation)}",
                 fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def attention_source(config):
    """Which attention frame_attention() returns, for a figure's label."""
    return (f"Perceiver layer {config.num_layers} of {config.num_layers}, mean of its "
            f"{config.num_heads} heads")


def write_attention_plots(model, dataset, translations, out_dir, count, device,
                          precision="fp32"):
    """The first `count` samples of the data set -> [png paths]. translations: by index."""
    what = attention_source(model.config)
    out = Path(out_dir) / "attention"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(min(count, len(dataset))):
        item = dataset[index]
        attention = frame_attention(model, item["inputs"], device, precision)
        name = file_stem(item["id"])
        atomic_write(out / f"{name}.npy", lambda f: np.save(f, attention))
        plot_attention(attention, item["text"], translations[index], out / f"{name}.png",
                       what)
        written.append(out / f"{name}.png")
    return written
