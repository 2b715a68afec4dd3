"""Prompt encoding against diffusers' CogVideoXPipeline.encode_prompt on the tiny checkpoint.

Tolerance: atol 1e-5 (fp32 T5 encoder; measured differences ~2e-6). Token ids and masks must match exactly.
"""
from __future__ import annotations

import json

import mindspore as ms
import numpy as np
import pytest

from toolkit.loading import build_and_load
from toolkit.models.t5.encoder import T5EncoderModel
from toolkit.text import encode_prompt, load_tokenizer, tokenize_t5
from toolkit.tiny_tokenizers import write_tiny_t5_tokenizer

ATOL = 1e-5
MAX_SEQ = 16
PROMPTS = ["a panda plays guitar in a bamboo forest",
           "a red car on a street at night with light and slow motion camera and high quality video of the sky"]
NEGATIVE = ["blurry", "low quality, worst"]


@pytest.fixture(scope="module")
def ref(cogvideox_ref):
    return cogvideox_ref("5b")


@pytest.fixture(scope="module")
def models(ref):
    folder, _ = ref
    return load_tokenizer(folder, "tokenizer"), build_and_load(T5EncoderModel, folder, "text_encoder")[0]


def diffusers_encode(pipe, prompt, negative_prompt, **kw):
    import torch

    with torch.no_grad():
        pe, ne = pipe.encode_prompt(prompt, negative_prompt, max_sequence_length=MAX_SEQ, **kw)
    return pe.numpy(), None if ne is None else ne.numpy()


def test_matches_diffusers_with_cfg_and_two_videos_per_prompt(ref, models):
    tokenizer, encoder = models
    expected = diffusers_encode(ref[1], PROMPTS, NEGATIVE, do_classifier_free_guidance=True,
                                num_videos_per_prompt=2)
    pe, ne = encode_prompt(tokenizer, encoder, PROMPTS, NEGATIVE, do_cfg=True, num_videos_per_prompt=2,
                           max_sequence_length=MAX_SEQ)
    assert pe.dtype == ne.dtype == np.float32 and pe.shape == (4, MAX_SEQ, 32)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)


def test_default_negative_prompt_is_empty_string_for_every_prompt(ref, models):
    expected = diffusers_encode(ref[1], PROMPTS, None, do_classifier_free_guidance=True, num_videos_per_prompt=1)
    pe, ne = encode_prompt(*models, PROMPTS, do_cfg=True, max_sequence_length=MAX_SEQ)
    np.testing.assert_allclose(ne, expected[1], atol=ATOL, rtol=0)
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)


def test_without_cfg_no_negative_embeddings(ref, models):
    expected = diffusers_encode(ref[1], "a cat walks on the grass", None, do_classifier_free_guidance=False)
    pe, ne = encode_prompt(*models, "a cat walks on the grass", do_cfg=False, max_sequence_length=MAX_SEQ)
    assert ne is None and expected[1] is None
    np.testing.assert_allclose(pe, expected[0], atol=ATOL, rtol=0)


def test_tokenization_matches_pipeline_and_warns_on_truncation(ref, models, caplog):
    tokens = tokenize_t5(models[0], PROMPTS, MAX_SEQ)
    expected = ref[1].tokenizer(PROMPTS, padding="max_length", max_length=MAX_SEQ, truncation=True,
                                add_special_tokens=True, return_tensors="np")
    np.testing.assert_array_equal(tokens.input_ids, expected.input_ids)
    np.testing.assert_array_equal(tokens.attention_mask, expected.attention_mask)
    assert tokens.input_ids[1, -1] == 1  # </s> kept after truncation
    assert "truncated" in caplog.text


def test_attention_mask_is_passed_to_encoder_and_returned_per_video(ref, models):
    import torch

    tokenizer, encoder = models
    pe, pm, ne, nm = encode_prompt(tokenizer, encoder, PROMPTS, NEGATIVE, do_cfg=True, num_videos_per_prompt=2,
                                   max_sequence_length=MAX_SEQ, use_attention_mask=True,
                                   return_attention_mask=True)
    for prompts, embeds, mask in ((PROMPTS, pe, pm), (NEGATIVE, ne, nm)):
        t = ref[1].tokenizer(prompts, padding="max_length", max_length=MAX_SEQ, truncation=True,
                             add_special_tokens=True, return_tensors="pt")
        with torch.no_grad():
            expected = ref[1].text_encoder(t.input_ids, attention_mask=t.attention_mask)[0].numpy()
        np.testing.assert_allclose(embeds, np.repeat(expected, 2, axis=0), atol=ATOL, rtol=0)
        np.testing.assert_array_equal(mask, np.repeat(t.attention_mask.numpy(), 2, axis=0))


# ---- argument handling: a stand-in encoder, no reference needed -----------------------------------

@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    write_tiny_t5_tokenizer(folder)
    return load_tokenizer(folder)


def zeros_encoder(input_ids, attention_mask=None):
    return ms.Tensor(np.zeros(input_ids.shape + (4,), np.float32))


def test_precomputed_prompt_embeds_are_used_as_given(tiny_tokenizer):
    given = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    pe, ne = encode_prompt(tiny_tokenizer, zeros_encoder, None, do_cfg=True, num_videos_per_prompt=3,
                           prompt_embeds=given, negative_prompt_embeds=given + 1)
    np.testing.assert_array_equal(pe, given)
    np.testing.assert_array_equal(ne, given + 1)


def test_prompt_and_prompt_embeds_together_are_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="`prompt` or `prompt_embeds`"):
        encode_prompt(tiny_tokenizer, zeros_encoder, "a cat", do_cfg=True, prompt_embeds=np.zeros((1, 3, 4)))


def test_missing_prompt_is_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="`prompt_embeds`"):
        encode_prompt(tiny_tokenizer, zeros_encoder, None, do_cfg=True)


def test_negative_prompt_of_other_type_than_prompt_is_rejected(tiny_tokenizer):
    with pytest.raises(TypeError, match="`negative_prompt`"):
        encode_prompt(tiny_tokenizer, zeros_encoder, ["a cat"], ("a dog",), do_cfg=True, max_sequence_length=8)


def test_negative_prompt_batch_mismatch_is_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="`negative_prompt` has 1 entries but there are 2 prompts"):
        encode_prompt(tiny_tokenizer, zeros_encoder, ["a cat", "a dog"], ["blurry"], do_cfg=True,
                      max_sequence_length=8)


def test_negative_prompt_and_negative_embeds_together_are_rejected(tiny_tokenizer):
    with pytest.raises(ValueError, match="`negative_prompt` or `negative_prompt_embeds`"):
        encode_prompt(tiny_tokenizer, zeros_encoder, "a cat", "blurry", do_cfg=True,
                      negative_prompt_embeds=np.zeros((1, 8, 4)))


def test_load_tokenizer_reads_sentencepiece_folder(tmp_path):
    """Real T5 checkpoints ship spiece.model without tokenizer.json; ids must be SentencePiece's plus </s>."""
    spm = pytest.importorskip("sentencepiece")
    import io

    from toolkit.tiny_tokenizers import WORDS

    model = io.BytesIO()
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, vocab_size=60,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    (tmp_path / "spiece.model").write_bytes(model.getvalue())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
         "extra_ids": 0, "legacy": True, "model_max_length": 226}))
    tokenizer = load_tokenizer(tmp_path)
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "spiece.model"))
    text = "a panda plays guitar in the bamboo forest"
    expected = sp.encode(text) + [1]
    tokens = tokenize_t5(tokenizer, [text], 20)
    np.testing.assert_array_equal(tokens.input_ids[0, :len(expected)], expected)
    assert (tokens.input_ids[0, len(expected):] == 0).all()
    assert tokens.attention_mask[0].sum() == len(expected)


def test_load_tokenizer_names_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer folder"):
        load_tokenizer(tmp_path, "tokenizer")
