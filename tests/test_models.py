"""sonar_t5/models/: masks, attention, T5 equivalence, generation, checkpoints, tokenizer, freezing."""

import pytest
import torch
import torch.nn.functional as F
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from sonar_t5.common.errors import UserError
from sonar_t5.models import (PerceiverResampler, ProjectionBridge, FeatureEncoder,
                             FeatureEncoderConfig)
from sonar_t5.models.build import build_model
from sonar_t5.models.checkpoint import load_checkpoint, load_model, save_model
from sonar_t5.models.encoders import load_encoder
from sonar_t5.models.feature_encoder import save_feature_encoder
from sonar_t5.models.tokenizer import Tokenizer, train_tokenizer

from .conftest import TEXTS, assert_user_error, run_script

def padded_pair(dim=16):
    """The same two sequences, the second padded with garbage beyond its length."""
    x = torch.randn(2, 10, dim)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    garbage = x.clone()
    garbage[1, 6:] = 1000.0
    return x, garbage, mask


def test_encoder_ignores_padding():
    enc = FeatureEncoder(FeatureEncoderConfig(input_dim=16, d_model=32, num_layers=2, num_heads=4)).eval()
    x, garbage, mask = padded_pair()
    pooled_a, tokens_a = enc(x, mask)
    pooled_b, tokens_b = enc(garbage, mask)
    assert pooled_a.shape == (2, 1024) and tokens_a.shape == (2, 10, 1024)
    torch.testing.assert_close(pooled_a, pooled_b)
    torch.testing.assert_close(tokens_a[mask], tokens_b[mask])
    alone, _ = enc(x[1:, :6], mask[1:, :6])  # the unpadded sequence on its own
    torch.testing.assert_close(alone[0], pooled_a[1], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("bridge_cls", [PerceiverResampler, ProjectionBridge])
def test_bridges_ignore_padding(bridge_cls):
    bridge = bridge_cls(input_dim=1024, hidden_dim=64, output_dim=32, num_latents=8,
                        num_heads=4).eval()
    x, garbage, mask = padded_pair(1024)
    a, b = bridge(x, mask), bridge(garbage, mask)
    assert a.shape == (2, 8, 32)
    torch.testing.assert_close(a, b)


def test_one_input_token_attention_is_not_uniform_and_latents_differ():
    torch.manual_seed(0)
    perceiver = PerceiverResampler(input_dim=1024, hidden_dim=64, output_dim=32, num_latents=8,
                                   num_heads=4).eval()
    prefix, attentions = perceiver(torch.randn(3, 1024), return_attention=True)
    attn = attentions[0]  # (B, heads, latents, 1 input + 8 latents)
    assert attn.shape == (3, 4, 8, 9)
    assert attn.std(dim=-1).min() > 1e-3  # never uniform over keys
    assert attn[..., 0].max() < 0.999  # the single input is not the only key
    distances = torch.cdist(prefix[0], prefix[0])
    assert distances[~torch.eye(8, dtype=torch.bool)].min() > 1e-3  # latents all differ


def test_seed_perceiver_parameter_count():
    count = sum(p.numel() for p in PerceiverResampler().parameters())
    assert count == 9_109_760  # documented in the README; the original guide expected 5-10M


def test_decoder_logits_equal_t5_for_conditional_generation(tiny_model):
    model, tok = tiny_model
    full = T5ForConditionalGeneration(model.t5.config).eval()
    missing, unexpected = full.load_state_dict(model.t5.state_dict(), strict=False)
    assert all(k.startswith("encoder.") for k in missing) and not unexpected
    prefix = torch.randn(2, 8, model.t5.config.d_model)
    mask = torch.ones(2, 8, dtype=torch.long)  # a prefix is all real positions
    decoder_input_ids = torch.tensor([[0, 5, 9, 12], [0, 7, 3, 1]])
    ours = model.decoder_logits(prefix, decoder_input_ids)
    theirs = full(encoder_outputs=BaseModelOutput(last_hidden_state=prefix), attention_mask=mask,
                  decoder_input_ids=decoder_input_ids).logits
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("reduction, smoothing", [("mean", 0.0), ("mean", 0.1), ("sum", 0.0)])
def test_decoder_loss_on_labelled_positions_equals_the_loss_over_all_logits(
        tiny_model, reduction, smoothing):
    """The LM head runs only where there is a label: the loss and its gradients are those of
    the full logits with padding ignored."""
    model, _ = tiny_model
    labels = torch.tensor([[5, 9, 12, 1, -100, -100], [7, 3, 4, 8, 6, 1]])
    prefix = torch.randn(2, 8, model.t5.config.d_model, requires_grad=True)
    ours = model.decoder_loss(prefix, labels, label_smoothing=smoothing, reduction=reduction)
    ours_grad, = torch.autograd.grad(ours, prefix)
    logits = model.decoder_logits(prefix, model.t5._shift_right(labels))
    theirs = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                             label_smoothing=smoothing, reduction=reduction)
    theirs_grad, = torch.autograd.grad(theirs, prefix)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=1e-4, atol=1e-6)
    assert ours.item() > 0


def test_batched_beam_generation_equals_per_sample(tiny_model):
    model, _ = tiny_model
    torch.manual_seed(1)
    features = torch.randn(3, 12, 16)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[0, 5:] = False
    mask[2, 9:] = False
    kwargs = dict(num_beams=3, max_new_tokens=10, bad_words_ids=[[0]])

    def translate(f, m):
        return model.generate(model.prefix(f, m), **kwargs)

    batched = translate(features, mask)
    for i in range(3):
        n = int(mask[i].sum())
        single = translate(features[i:i + 1, :n], mask[i:i + 1, :n])[0]
        row = batched[i][: len(single)]
        assert row.tolist() == single.tolist()
        assert (batched[i][len(single):] == 0).all()  # only padding beyond


def test_checkpoint_round_trip_gives_identical_outputs(tiny_model, tmp_path):
    model, tok = tiny_model
    path = tmp_path / "model.pt"
    save_model(path, model, tok, {"num_beams": 1})
    loaded, loaded_tok, ckpt = load_model(path)
    assert ckpt["train_args"] == {"num_beams": 1}
    features, mask = torch.randn(2, 7, 16), torch.ones(2, 7, dtype=torch.bool)
    labels = torch.tensor([tok.encode("fold the paper")] * 2)
    torch.testing.assert_close(model(features, mask, labels), loaded(features, mask, labels),
                               rtol=0, atol=0)
    assert loaded_tok.encode(TEXTS[0]) == tok.encode(TEXTS[0])
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_checkpoint_carrying_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"kind": "sonar_t5", "payload": Evil()}, path)
    with pytest.raises(UserError, match="refused to load checkpoint"):
        load_checkpoint(path)
    result = run_script("validate_perceiver_model.py", "--checkpoint", path, "--features",
                        tmp_path, "--manifest", tmp_path / "m.tsv")
    assert_user_error(result, "refused to load checkpoint", str(path))
    assert "pwned" not in result.stdout


def test_tokenizer_round_trip():
    tok = train_tokenizer(TEXTS, vocab_size=80)
    for text in set(TEXTS):
        ids = tok.encode(text)
        assert ids[-1] == 1 and 2 not in ids  # eos, and no <unk>
        assert tok.decode(ids) == text
    copy = Tokenizer.from_tensor(tok.to_tensor())
    assert copy.encode(TEXTS[1]) == tok.encode(TEXTS[1])
    assert (tok.sp.pad_id(), tok.sp.eos_id(), tok.sp.unk_id(), tok.sp.bos_id()) == (0, 1, 2, -1)


def test_freeze_really_freezes(tiny_model):
    model, tok = tiny_model
    model = build_model(t5=model.t5, tokenizer=tok, encoder=model.encoder, t5_model="t5-tiny",
                        num_latents=8, hidden_dim=64, num_heads=4).freeze_encoder().train()
    assert not model.encoder.training and model.bridge.training
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([tok.encode("fold the paper")] * 2)
    for _ in range(2):
        model(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool), labels).backward()
        optimizer.step()
    assert all(p.grad is None for p in model.encoder.parameters())
    for k, v in model.encoder.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    counts = model.parameter_counts()
    assert counts["trainable"] == counts["bridge"] + counts["t5"]


def test_t5_encoder_is_dropped(tiny_model):
    model, _ = tiny_model
    assert not any(k.startswith("t5.encoder.") for k in model.state_dict())
    counts = model.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())


def test_sonar_checkpoint_mismatch_names_keys(tmp_path):
    enc = FeatureEncoder(FeatureEncoderConfig(input_dim=16, d_model=32, num_layers=1, num_heads=4))
    save_feature_encoder(enc, tmp_path / "enc.pt")
    assert load_encoder(tmp_path / "enc.pt").config == enc.config
    ckpt = torch.load(tmp_path / "enc.pt", weights_only=True)
    del ckpt["state_dict"]["input_proj.weight"]
    ckpt["state_dict"]["extra.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=r"missing keys: input_proj.weight.*unexpected keys: extra.weight"):
        load_encoder(tmp_path / "bad.pt")


@pytest.mark.slow
def test_smoke_test_script_passes():
    result = run_script("test_perceiver_architecture.py", "--device", "cpu", check=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("✅")]
    for expected in ("✅ Perceiver Resampler created (9,109,760 parameters)", "✅ Forward pass successful",
                     "✅ Output shape correct (2, 64, 512)", "✅ Model working",
                     "✅ Gradients computed correctly", "✅ ALL TESTS PASSED!"):
        assert any(line.startswith(expected) for line in lines), (expected, result.stdout)
    assert len(lines) == 6


@pytest.mark.slow
def test_smoke_test_projection_bridge():
    result = run_script("test_perceiver_architecture.py", "--bridge", "projection",
                        "--num_latents", "32", check=True)
    assert "✅ Output shape correct (2, 32, 512)" in result.stdout
    assert "✅ ALL TESTS PASSED!" in result.stdout


def test_hub_t5_without_network_is_a_one_line_error():
    result = run_script("test_perceiver_architecture.py", "--t5_model", "t5-small")
    assert_user_error(result, "cannot load T5 model 't5-small'", "save_pretrained",
                      "scratch-t5-small")


def test_contrastive_loss_picks_each_prefix_own_text(tiny_model):
    from sonar_t5.models.sonar_t5 import ContrastiveHeads
    model, _ = tiny_model
    torch.manual_seed(0)
    heads = ContrastiveHeads(d_model=128, dim=16)
    labels = torch.tensor([[5, 6, 7, 1], [8, 9, 1, -100], [10, 11, 12, 1]])
    prefix = torch.randn(3, 8, 128)
    loss = heads(prefix, model.t5.shared, labels)
    assert loss.item() > 0
    loss.backward()
    assert heads.prefix_head.weight.grad.abs().sum() > 0
    # Heads that map a prefix onto its own text's embedding: near-zero loss; shuffled: high.
    with torch.no_grad():
        heads.prefix_head.weight.copy_(torch.eye(16, 128))
        heads.text_head.weight.copy_(torch.eye(16, 128))
        heads.prefix_head.bias.zero_(), heads.text_head.bias.zero_()
        valid = (labels >= 0).unsqueeze(-1).float()
        text = (model.t5.shared(labels.clamp(min=0)) * valid).sum(1) / valid.sum(1)
        own = heads(text.unsqueeze(1).expand(3, 8, 128), model.t5.shared, labels)
        swapped = heads(text[[1, 2, 0]].unsqueeze(1).expand(3, 8, 128), model.t5.shared, labels)
    assert own < 0.5 < swapped
    # The model adds it only when it has heads and a weight (eval: no dropout between calls).
    model.eval()
    x, mask = torch.randn(3, 5, 16), torch.ones(3, 5, dtype=torch.bool)
    plain = model(x, mask, labels)
    assert model(x, mask, labels, contrastive_weight=1.0).item() == plain.item()  # no heads


def test_perceiver_fused_attention_equals_the_explicit_weights():
    """Training runs PyTorch's scaled_dot_product_attention with the padding mask; the
    attention plots compute the weights themselves: the same outputs and gradients."""
    from sonar_t5.models.perceiver import PerceiverResampler
    torch.manual_seed(0)
    model = PerceiverResampler(input_dim=32, hidden_dim=64, output_dim=48, num_latents=8,
                               num_layers=2, num_heads=4, dim_head=16)
    x = torch.randn(3, 20, 32)
    mask = torch.arange(20)[None] < torch.tensor([20, 7, 1])[:, None]  # one frame left, too
    fused = model(x, mask)
    fused_grads = torch.autograd.grad(fused.square().sum(), list(model.parameters()))
    explicit, attentions = model(x, mask, return_attention=True)
    explicit_grads = torch.autograd.grad(explicit.square().sum(), list(model.parameters()))
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max())  # relative: sums
               for a, b in zip(fused_grads, explicit_grads))
    assert attentions[0].shape == (3, 4, 8, 28)
    assert attentions[0][2, :, :, 1:20].abs().max() == 0  # padded frames get no weight
