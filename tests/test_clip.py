"""The MindSpore CLIP encoders, tokenizer, prompt encoding and image preprocessing against transformers and
diffusers on tiny random checkpoints (the component sizes of diffusers' own tests).

Tolerance: atol 1e-5 for every network output (fp32; outputs are layer-normed, magnitude ~3; measured
differences ~1e-6 from matmul / rsqrt rounding) and for preprocessed pixels (magnitude ~2; the bicubic
weights are computed in float32 as PyTorch does, measured ~1e-6). Token ids must match exactly.
"""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import mindspore as ms
import numpy as np
import pytest

from toolkit.loading import CheckpointError, build_and_load
from toolkit.models.clip import CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionModelWithProjection
from toolkit.models.clip.preprocess import (i2vgen_xl_clip_pixels, read_image_processor_config,
                                            resize_with_antialiasing, svd_clip_pixels)
from toolkit.text import encode_prompt_clip, load_tokenizer, tokenize_clip
from toolkit.tiny_tokenizers import write_tiny_clip_tokenizer

torch = pytest.importorskip("torch", reason="torch (test-only reference) is not installed")
transformers = pytest.importorskip("transformers", reason="transformers (test-only reference) is not installed")

ATOL = 1e-5
PROMPTS = ["a panda plays guitar in a bamboo forest", "a red car on a street at night"]
NEGATIVE = ["blurry", "low quality, worst"]
TEXT_CONFIG = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
                   max_position_embeddings=77, layer_norm_eps=1e-5)
VISION_CONFIG = dict(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=4,
                     image_size=32, intermediate_size=37, patch_size=1)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    return folder, write_tiny_clip_tokenizer(folder)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return load_tokenizer(tokenizer_dir[0])


def save_reference(model, folder):
    model.eval().save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def text_ref(tokenizer_dir, tokenizer, tmp_path_factory):
    """(folder, transformers CLIPTextModel): 5 layers, the tiny tokenizer's vocabulary and special ids."""
    torch.manual_seed(0)
    cfg = transformers.CLIPTextConfig(vocab_size=tokenizer_dir[1], bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                      **TEXT_CONFIG)
    model = transformers.CLIPTextModel(cfg)
    return save_reference(model, tmp_path_factory.mktemp("clip_text")), model.eval()


@pytest.fixture(scope="module")
def text_net(text_ref):
    return build_and_load(CLIPTextModel, text_ref[0])[0]


@pytest.fixture(scope="module")
def vision_ref(tmp_path_factory):
    torch.manual_seed(0)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**VISION_CONFIG))
    return save_reference(model, tmp_path_factory.mktemp("clip_vision")), model.eval()


def token_ids(tokenizer, prompts=PROMPTS):
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="np")


def torch_text(model, ids, mask=None, **kw):
    with torch.no_grad():
        kw = dict(kw, attention_mask=None if mask is None else torch.from_numpy(np.asarray(mask)))
        return model(torch.from_numpy(np.asarray(ids, np.int64)), **kw)


def resave(src, dst, edit, config_edit=None):
    """Copy a checkpoint folder with its state dict (and config) changed, as another writer would."""
    from safetensors.torch import load_file, save_file

    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    state = load_file(str(src / "model.safetensors"))
    state = edit(state) or state
    save_file(state, str(dst / "model.safetensors"))
    return dst


# ------------------------------------------------------------------------------------------ tokenizer


def test_tiny_tokenizer_is_a_vocab_and_merges_folder_loaded_by_clip_tokenizer(tokenizer_dir):
    folder, vocab_size = tokenizer_dir
    assert (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
    assert not (folder / "tokenizer.json").exists()
    for cls in (transformers.CLIPTokenizer, transformers.AutoTokenizer):
        tok = cls.from_pretrained(str(folder))
        assert type(tok).__name__ == "CLIPTokenizer"
        assert tok.model_max_length == 77 and len(tok) == vocab_size
        assert tok.convert_ids_to_tokens([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]) == \
            ["<|startoftext|>", "<|endoftext|>", "<|endoftext|>"]
        assert tok.eos_token_id == vocab_size - 1  # the largest id, as in OpenAI's vocabulary
        ids = tok(PROMPTS[0]).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) < len(PROMPTS[0])
        assert tok.decode(ids, skip_special_tokens=True) == PROMPTS[0]


def test_tokenize_clip_pads_to_model_max_length_and_warns_on_truncation(tokenizer, caplog):
    long = " ".join(["a red panda"] * 40)
    tokens = tokenize_clip(tokenizer, [PROMPTS[0], long])
    assert tokens.input_ids.shape == (2, 77)
    np.testing.assert_array_equal(tokens.input_ids, token_ids(tokenizer, [PROMPTS[0], long]).input_ids)
    assert tokens.input_ids[1, -1] == tokenizer.eos_token_id  # end token kept after truncation
    assert tokens.attention_mask[0].sum() < 77 and tokens.attention_mask[1].sum() == 77
    assert "truncated because CLIP can only handle sequences up to 77 tokens" in caplog.text


# ------------------------------------------------------------------------------------------ text model


def test_text_model_matches_transformers_last_hidden_state_and_pooled(text_ref, text_net, tokenizer):
    ids = token_ids(tokenizer).input_ids
    expected = torch_text(text_ref[1], ids)
    last, pooled = text_net(ms.Tensor(ids))
    assert last.shape == (2, 77, 32) and pooled.shape == (2, 32)
    np.testing.assert_allclose(last.asnumpy(), expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(pooled.asnumpy(), expected.pooler_output.numpy(), atol=ATOL, rtol=0)


def test_hidden_states_match_transformers_output_hidden_states(text_ref, text_net, tokenizer):
    ids = token_ids(tokenizer).input_ids
    expected = torch_text(text_ref[1], ids, output_hidden_states=True).hidden_states
    ours = text_net.hidden_states(ms.Tensor(ids))
    assert len(ours) == len(expected) == TEXT_CONFIG["num_hidden_layers"] + 1
    for o, e in zip(ours, expected):
        np.testing.assert_allclose(o.asnumpy(), e.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_clip_skip_is_final_layer_norm_of_hidden_state_minus_clip_skip_plus_one(text_ref, text_net, tokenizer,
                                                                               clip_skip):
    ids = token_ids(tokenizer).input_ids
    hidden = torch_text(text_ref[1], ids, output_hidden_states=True).hidden_states
    with torch.no_grad():
        expected = text_ref[1].final_layer_norm(hidden[-(clip_skip + 1)]).numpy()
    np.testing.assert_allclose(text_net.encode(ms.Tensor(ids), clip_skip=clip_skip).asnumpy(), expected,
                               atol=ATOL, rtol=0)


def test_clip_skip_zero_is_last_hidden_state_and_too_large_is_rejected(text_net, tokenizer):
    ids = ms.Tensor(token_ids(tokenizer).input_ids)
    np.testing.assert_array_equal(text_net.encode(ids, clip_skip=0).asnumpy(), text_net(ids)[0].asnumpy())
    with pytest.raises(ValueError, match="clip_skip=6"):
        text_net.encode(ids, clip_skip=6)


def test_pooled_output_at_first_eos_token_not_at_largest_id(text_ref, rng, tmp_path):
    """Configs after transformers PR #24773 pool at the first ``eos_token_id``, wherever larger ids are;
    a row without one pools position 0 (torch's argmax of all zeros)."""
    import copy

    eos = 300
    folder = resave(text_ref[0], tmp_path / "te", lambda s: None, lambda c: c.update(eos_token_id=eos))
    net, _ = build_and_load(CLIPTextModel, folder)
    reference = copy.deepcopy(text_ref[1])
    reference.eos_token_id = eos
    ids = rng.integers(eos + 1, reference.config.vocab_size, (3, 12))
    ids[0, [4, 7]] = eos
    ids[1, 11] = eos
    expected = torch_text(reference, ids).pooler_output.numpy()
    last, pooled = net(ms.Tensor(ids))
    np.testing.assert_allclose(pooled.asnumpy(), expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(pooled.asnumpy(), last.asnumpy()[[0, 1, 2], [4, 11, 0]])


def test_pooled_output_at_largest_id_for_legacy_eos_token_id_2(text_ref, rng, tmp_path):
    """Configs written before transformers PR #24773 (SD 1.5's has eos_token_id=2) pool at argmax(ids)."""
    import copy

    folder = resave(text_ref[0], tmp_path / "te", lambda s: None, lambda c: c.update(eos_token_id=2))
    net, _ = build_and_load(CLIPTextModel, folder)
    reference = copy.deepcopy(text_ref[1])
    reference.eos_token_id = 2  # what transformers sets from the config
    vocab = reference.config.vocab_size
    ids = rng.integers(3, vocab // 2, (2, 10))
    ids[0, [3, 6]] = vocab - 5  # repeated maximum: the first one
    ids[1, 8] = vocab - 1
    expected = torch_text(reference, ids).pooler_output.numpy()
    last, pooled = net(ms.Tensor(ids))
    np.testing.assert_allclose(pooled.asnumpy(), expected, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(pooled.asnumpy(), last.asnumpy()[[0, 1], [3, 8]])


def test_attention_mask_is_combined_with_the_causal_mask(text_ref, text_net, tokenizer):
    tokens = token_ids(tokenizer)
    expected = torch_text(text_ref[1], tokens.input_ids, tokens.attention_mask).last_hidden_state.numpy()
    out = text_net(ms.Tensor(tokens.input_ids), ms.Tensor(tokens.attention_mask))[0].asnumpy()
    np.testing.assert_allclose(out, expected, atol=ATOL, rtol=0)
    # padding changes only the padded positions: the causal mask already hides later tokens
    unmasked = text_net(ms.Tensor(tokens.input_ids))[0].asnumpy()
    n = int(tokens.attention_mask[1].sum())
    np.testing.assert_allclose(out[1, :n], unmasked[1, :n], atol=ATOL, rtol=0)
    assert np.abs(out[1, n:] - unmasked[1, n:]).max() > 1e-3


def test_text_model_matches_transformers_under_jit(text_ref, text_net, tokenizer):
    ids = token_ids(tokenizer).input_ids
    last, pooled = ms.jit(text_net.construct)(ms.Tensor(ids))
    expected = torch_text(text_ref[1], ids)
    np.testing.assert_allclose(last.asnumpy(), expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(pooled.asnumpy(), expected.pooler_output.numpy(), atol=ATOL, rtol=0)


def test_loads_transformers4_layout_with_text_model_prefix_and_position_ids(text_ref, tokenizer, tmp_path):
    def transformers4(state):
        state = {"text_model." + k: v for k, v in state.items()}
        state["text_model.embeddings.position_ids"] = torch.arange(77)[None]
        return state

    folder = resave(text_ref[0], tmp_path / "te", transformers4)
    net, _ = build_and_load(CLIPTextModel, folder)
    ids = token_ids(tokenizer).input_ids
    np.testing.assert_allclose(net(ms.Tensor(ids))[0].asnumpy(),
                               torch_text(text_ref[1], ids).last_hidden_state.numpy(), atol=ATOL, rtol=0)


def test_checkpoint_missing_final_layer_norm_is_rejected(text_ref, tmp_path):
    def drop(state):
        del state["final_layer_norm.weight"]

    folder = resave(text_ref[0], tmp_path / "te", drop)
    with pytest.raises(CheckpointError, match="text_model.final_layer_norm.weight"):
        build_and_load(CLIPTextModel, folder)


def test_text_model_with_projection_matches_transformers(tokenizer_dir, tokenizer, tmp_path):
    torch.manual_seed(1)
    cfg = transformers.CLIPTextConfig(vocab_size=tokenizer_dir[1], eos_token_id=tokenizer.eos_token_id,
                                      projection_dim=16, hidden_act="gelu",
                                      **dict(TEXT_CONFIG, num_hidden_layers=2))
    reference = transformers.CLIPTextModelWithProjection(cfg).eval()
    net, _ = build_and_load(CLIPTextModelWithProjection, save_reference(reference, tmp_path))
    ids = token_ids(tokenizer).input_ids
    expected = torch_text(reference, ids)
    text_embeds, last = net(ms.Tensor(ids))
    assert text_embeds.shape == (2, 16)
    np.testing.assert_allclose(text_embeds.asnumpy(), expected.text_embeds.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(last.asnumpy(), expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)


def test_transformers4_text_config_is_accepted_silently(caplog):
    # runwayml/stable-diffusion-v1-5 text_encoder/config.json as shipped, shrunk
    config = {"_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
              "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
              "hidden_act": "quick_gelu", "hidden_size": 32, "initializer_factor": 1.0,
              "initializer_range": 0.02, "intermediate_size": 37, "layer_norm_eps": 1e-05,
              "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 4,
              "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
              "transformers_version": "4.22.0.dev0", "vocab_size": 49408}
    with caplog.at_level(logging.WARNING):
        net = CLIPTextModel.from_config(config)
    assert not caplog.records
    assert net.text_model.eos_token_id == 2
    assert not any("projection" in n for n, _ in net.parameters_and_names())


def test_transformers5_configs_written_by_the_fixtures_are_accepted_silently(text_ref, vision_ref, caplog):
    with caplog.at_level(logging.WARNING):
        CLIPTextModel.from_config(json.loads((text_ref[0] / "config.json").read_text()))
        CLIPVisionModelWithProjection.from_config(json.loads((vision_ref[0] / "config.json").read_text()))
    assert not caplog.records


def test_unknown_hidden_act_is_rejected():
    with pytest.raises(ValueError, match="hidden_act='relu'"):
        CLIPTextModel(vocab_size=10, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=2, hidden_act="relu")


# ------------------------------------------------------------------------------------------ vision model


def test_vision_model_matches_transformers_image_embeds(vision_ref, rng):
    net, _ = build_and_load(CLIPVisionModelWithProjection, vision_ref[0])
    pixels = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = vision_ref[1](torch.from_numpy(pixels))
    image_embeds, last = net(ms.Tensor(pixels))
    assert image_embeds.shape == (2, 32) and last.shape == (2, 32 * 32 + 1, 32)
    np.testing.assert_allclose(image_embeds.asnumpy(), expected.image_embeds.numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(last.asnumpy(), expected.last_hidden_state.numpy(), atol=ATOL, rtol=0)


def test_vision_model_with_gelu_and_patches_loads_transformers4_buffers(rng, tmp_path):
    """SVD's OpenCLIP image encoder uses exact gelu and 14-pixel patches; old checkpoints store position_ids."""
    torch.manual_seed(2)
    cfg = transformers.CLIPVisionConfig(**dict(VISION_CONFIG, image_size=28, patch_size=7, hidden_act="gelu",
                                               projection_dim=24))
    reference = transformers.CLIPVisionModelWithProjection(cfg).eval()
    src = save_reference(reference, tmp_path / "src")

    def add_position_ids(state):
        state["vision_model.embeddings.position_ids"] = torch.arange(17)[None]

    net, _ = build_and_load(CLIPVisionModelWithProjection, resave(src, tmp_path / "dst", add_position_ids))
    pixels = rng.standard_normal((3, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels)).image_embeds.numpy()
    np.testing.assert_allclose(net(ms.Tensor(pixels))[0].asnumpy(), expected, atol=ATOL, rtol=0)


def test_vision_model_rejects_wrong_image_size(vision_ref):
    net = CLIPVisionModelWithProjection.from_config(json.loads((vision_ref[0] / "config.json").read_text()))
    with pytest.raises(ValueError, match="image_size=32"):
        net(ms.Tensor(np.zeros((1, 3, 24, 32), np.float32)))


# ------------------------------------------------------------------------------------------ prompt encoding


def diffusers_encode(pipeline_cls, text_ref, tokenizer, prompt, negative_prompt, *, do_cfg, n=1, clip_skip=None,
                     **kw):
    """diffusers' encode_prompt as an unbound method on an object carrying the tokenizer and text encoder.
    transformers 5's CLIPTextModel lost ``text_model``, which the clip_skip path calls: give it back."""
    import diffusers

    host = SimpleNamespace(tokenizer=tokenizer, text_encoder=text_ref[1], unet=None,
                           do_classifier_free_guidance=do_cfg)
    with pytest.MonkeyPatch.context() as mp, torch.no_grad():
        mp.setattr(transformers.CLIPTextModel, "text_model", property(lambda self: self), raising=False)
        if pipeline_cls is diffusers.I2VGenXLPipeline:
            pe, ne = pipeline_cls.encode_prompt(host, prompt, "cpu", n, negative_prompt, clip_skip=clip_skip, **kw)
        else:
            pe, ne = pipeline_cls.encode_prompt(host, prompt, "cpu", n, do_cfg, negative_prompt,
                                                clip_skip=clip_skip, **kw)
    return pe.numpy(), None if ne is None else ne.numpy()


@pytest.mark.parametrize("clip_skip", [None, 1])
def test_encode_prompt_matches_animatediff_with_cfg_negative_and_two_videos(text_ref, text_net, tokenizer,
                                                                            clip_skip):
    from diffusers import AnimateDiffPipeline

    expected = diffusers_encode(AnimateDiffPipeline, text_ref, tokenizer, PROMPTS, NEGATIVE, do_cfg=True, n=2,
                                clip_skip=clip_skip)
    pe, ne = encode_prompt_clip(tokenizer, text_net, PROMPTS, NEGATIVE, do_cfg=True, num_videos_per_prompt=2,
                                clip_skip=clip_skip)
    assert pe.dtype == ne.dtype == np.float32 and pe.shape == ne.shape == (4, 77, 32)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)


def test_encode_prompt_clip_skip_changes_prompt_but_not_negative_embeddings(text_net, tokenizer):
    pe0, ne0 = encode_prompt_clip(tokenizer, text_net, PROMPTS, NEGATIVE, do_cfg=True)
    pe1, ne1 = encode_prompt_clip(tokenizer, text_net, PROMPTS, NEGATIVE, do_cfg=True, clip_skip=1)
    assert np.abs(pe0 - pe1).max() > 1e-2
    np.testing.assert_array_equal(ne0, ne1)


def test_encode_prompt_matches_i2vgen_xl_which_clip_skips_the_negative_too(text_ref, text_net, tokenizer):
    from diffusers import I2VGenXLPipeline

    expected = diffusers_encode(I2VGenXLPipeline, text_ref, tokenizer, PROMPTS, NEGATIVE, do_cfg=True, n=2,
                                clip_skip=2)
    pe, ne = encode_prompt_clip(tokenizer, text_net, PROMPTS, NEGATIVE, do_cfg=True, num_videos_per_prompt=2,
                                clip_skip=2, clip_skip_negative=True)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)


def test_encode_prompt_default_negative_is_empty_string_and_no_cfg_gives_none(text_ref, text_net, tokenizer):
    from diffusers import AnimateDiffPipeline

    expected = diffusers_encode(AnimateDiffPipeline, text_ref, tokenizer, PROMPTS[0], None, do_cfg=True)
    pe, ne = encode_prompt_clip(tokenizer, text_net, PROMPTS[0], do_cfg=True)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)
    pe, ne = encode_prompt_clip(tokenizer, text_net, PROMPTS[0], do_cfg=False)
    assert ne is None
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)


def test_encode_prompt_repeats_precomputed_embeddings_like_diffusers(text_ref, text_net, tokenizer, rng):
    from diffusers import AnimateDiffPipeline

    given = rng.standard_normal((2, 77, 32)).astype(np.float32)
    expected = diffusers_encode(AnimateDiffPipeline, text_ref, tokenizer, None, None, do_cfg=True, n=3,
                                prompt_embeds=torch.from_numpy(given))
    pe, ne = encode_prompt_clip(tokenizer, text_net, None, do_cfg=True, num_videos_per_prompt=3, prompt_embeds=given)
    np.testing.assert_array_equal(pe, expected[0])
    assert pe.shape == (6, 77, 32)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)


def test_encode_prompt_passes_attention_mask_when_config_asks(text_ref, text_net, tokenizer, tmp_path):
    from diffusers import AnimateDiffPipeline

    folder = resave(text_ref[0], tmp_path / "te", lambda s: None, lambda c: c.update(use_attention_mask=True))
    net, _ = build_and_load(CLIPTextModel, folder)
    assert net.use_attention_mask
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(text_ref[1].config, "use_attention_mask", True, raising=False)
        expected = diffusers_encode(AnimateDiffPipeline, text_ref, tokenizer, PROMPTS, NEGATIVE, do_cfg=True)
    pe, ne = encode_prompt_clip(tokenizer, net, PROMPTS, NEGATIVE, do_cfg=True)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)
    unmasked, _ = encode_prompt_clip(tokenizer, text_net, PROMPTS, NEGATIVE, do_cfg=True)
    assert np.abs(pe - unmasked).max() > 1e-2  # the padded positions see only the tokens


def test_encode_prompt_rejects_mismatched_negative_prompts(text_net, tokenizer):
    with pytest.raises(ValueError, match="`negative_prompt` has 1 entries but there are 2 prompts"):
        encode_prompt_clip(tokenizer, text_net, PROMPTS, ["blurry"], do_cfg=True)
    with pytest.raises(TypeError, match="negative_prompt"):
        encode_prompt_clip(tokenizer, text_net, PROMPTS[0], NEGATIVE[:1], do_cfg=True)
    with pytest.raises(ValueError, match="not both"):
        encode_prompt_clip(tokenizer, text_net, PROMPTS, do_cfg=True, prompt_embeds=np.zeros((2, 77, 32)))


# ------------------------------------------------------------------------------------------ image preprocessing


@pytest.fixture(scope="module")
def feature_extractor_dir(tmp_path_factory):
    """A checkpoint's feature_extractor folder: CLIPImageProcessor at 224 px, as SVD and I2VGen-XL ship it."""
    folder = tmp_path_factory.mktemp("ckpt")
    transformers.CLIPImageProcessor(crop_size=224, size=224).save_pretrained(str(folder / "feature_extractor"))
    return folder


def diffusers_svd_pixels(image, feature_extractor_dir):
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import \
        _resize_with_antialiasing
    from diffusers.video_processor import VideoProcessor

    fe = transformers.CLIPImageProcessor.from_pretrained(str(feature_extractor_dir / "feature_extractor"))
    x = VideoProcessor.numpy_to_pt(VideoProcessor.pil_to_numpy(image))
    x = (_resize_with_antialiasing(x * 2.0 - 1.0, (224, 224)) + 1.0) / 2.0
    return fe(images=x, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
              return_tensors="pt").pixel_values.numpy()


@pytest.mark.parametrize("height, width", [(64, 96), (480, 300)])
def test_svd_clip_pixels_match_diffusers_resize_with_antialiasing_and_feature_extractor(
        feature_extractor_dir, rng, height, width):
    from PIL import Image

    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    fe = read_image_processor_config(feature_extractor_dir)
    ours = svd_clip_pixels(image, fe["image_mean"], fe["image_std"])
    assert ours.shape == (1, 3, 224, 224) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, diffusers_svd_pixels(image, feature_extractor_dir), atol=ATOL, rtol=0)


def test_resize_with_antialiasing_blurs_before_downscaling(rng):
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import \
        _resize_with_antialiasing

    x = rng.uniform(-1, 1, (2, 3, 300, 500)).astype(np.float32)
    expected = _resize_with_antialiasing(torch.from_numpy(x), (64, 48)).numpy()
    np.testing.assert_allclose(resize_with_antialiasing(x, (64, 48)), expected, atol=ATOL, rtol=0)


def test_svd_image_embeddings_match_diffusers_encode_image(feature_extractor_dir, rng, tmp_path):
    """preprocess + our image encoder vs StableVideoDiffusionPipeline._encode_image (224 px, 32 px patches)."""
    from diffusers import StableVideoDiffusionPipeline
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    torch.manual_seed(3)
    cfg = transformers.CLIPVisionConfig(**dict(VISION_CONFIG, image_size=224, patch_size=32, hidden_act="gelu"))
    encoder = transformers.CLIPVisionModelWithProjection(cfg).eval()
    net, _ = build_and_load(CLIPVisionModelWithProjection, save_reference(encoder, tmp_path))
    image = Image.fromarray(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8))
    host = SimpleNamespace(image_encoder=encoder, video_processor=VideoProcessor(),
                           feature_extractor=transformers.CLIPImageProcessor.from_pretrained(
                               str(feature_extractor_dir / "feature_extractor")))
    with torch.no_grad():
        expected = StableVideoDiffusionPipeline._encode_image(host, image, "cpu", 1, False).numpy()
    fe = read_image_processor_config(feature_extractor_dir)
    ours = net(ms.Tensor(svd_clip_pixels(image, fe["image_mean"], fe["image_std"])))[0].asnumpy()
    np.testing.assert_allclose(ours[:, None], expected, atol=ATOL, rtol=0)


def test_i2vgen_xl_clip_pixels_match_diffusers(feature_extractor_dir, rng):
    from diffusers.pipelines.deprecated.i2vgen_xl.pipeline_i2vgen_xl import _center_crop_wide, _resize_bilinear
    from diffusers.video_processor import VideoProcessor
    from PIL import Image

    image = Image.fromarray(rng.integers(0, 256, (90, 160, 3), dtype=np.uint8))
    fe = transformers.CLIPImageProcessor.from_pretrained(str(feature_extractor_dir / "feature_extractor"))
    cropped = _resize_bilinear(_center_crop_wide(image, (64, 64)), (fe.crop_size["width"], fe.crop_size["height"]))
    x = VideoProcessor.numpy_to_pt(VideoProcessor.pil_to_numpy(cropped))
    expected = fe(images=x, do_normalize=True, do_center_crop=False, do_resize=False, do_rescale=False,
                  return_tensors="pt").pixel_values.numpy()
    config = read_image_processor_config(feature_extractor_dir)
    ours = i2vgen_xl_clip_pixels(image, 64, (224, 224), config["image_mean"], config["image_std"])
    np.testing.assert_allclose(ours, expected, atol=ATOL, rtol=0)


def test_image_processor_config_defaults_to_openai_statistics(tmp_path):
    (tmp_path / "feature_extractor").mkdir()
    (tmp_path / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({"crop_size": 224}))
    config = read_image_processor_config(tmp_path)
    np.testing.assert_array_equal(config["image_mean"], [0.48145466, 0.4578275, 0.40821073])
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        read_image_processor_config(tmp_path, "image_encoder")
