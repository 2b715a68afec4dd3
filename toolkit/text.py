"""Prompt -> text-encoder embeddings, as diffusers' video pipelines compute them.

``encode_prompt`` reproduces CogVideoXPipeline.encode_prompt / _get_t5_prompt_embeds: pad every prompt
to ``max_sequence_length`` (truncating longer ones, with a warning), encode, repeat each prompt's
embedding ``num_videos_per_prompt`` times, and for classifier-free guidance encode the negative prompt
("" by default) the same way. Mochi passes the tokenizer's attention mask to the encoder
(``use_attention_mask=True``); Mochi and LTX-Video also need the mask afterwards
(``return_attention_mask=True``). Results are numpy float32 arrays.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


def load_tokenizer(folder: str | Path, subfolder: str | None = None):
    """The transformers tokenizer saved in ``folder`` (or ``folder/subfolder``): a ``tokenizer.json``
    folder, or a SentencePiece ``spiece.model`` folder as the real T5 checkpoints ship."""
    from transformers import AutoTokenizer  # heavy; only needed when prompts are encoded

    d = Path(folder) / subfolder if subfolder else Path(folder)
    if not d.is_dir():
        raise FileNotFoundError(f"tokenizer folder {d} does not exist")
    return AutoTokenizer.from_pretrained(str(d))


class Tokens(NamedTuple):
    input_ids: np.ndarray       # (B, max_sequence_length) int64
    attention_mask: np.ndarray  # (B, max_sequence_length) int64, 1 = token, 0 = padding


def _padded_tokens(tokenizer, prompts: list[str], max_length: int, why: str) -> Tokens:
    """Ids padded to ``max_length`` (end token kept), longer prompts truncated with a warning naming the
    dropped text, as diffusers' encoders do."""
    out = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                    add_special_tokens=True, return_tensors="np")
    ids = np.asarray(out["input_ids"], dtype=np.int64)
    untruncated = np.asarray(tokenizer(prompts, padding="longest", return_tensors="np")["input_ids"])
    if untruncated.shape[-1] >= ids.shape[-1] and not np.array_equal(untruncated, ids):
        removed = tokenizer.batch_decode(untruncated[:, max_length - 1: -1])
        log.warning("The following part of your input was truncated because %s: %s", why, removed)
    return Tokens(ids, np.asarray(out["attention_mask"], dtype=np.int64))


def tokenize_t5(tokenizer, prompts: list[str], max_sequence_length: int) -> Tokens:
    """T5 tokenization as diffusers' ``_get_t5_prompt_embeds``: ``</s>`` appended, padded to
    ``max_sequence_length``, longer prompts truncated with a warning naming the dropped text."""
    return _padded_tokens(tokenizer, prompts, max_sequence_length,
                          f"`max_sequence_length` is set to {max_sequence_length} tokens")


def embed_prompts(tokenizer, encoder, prompts: list[str], *, num_videos_per_prompt: int = 1,
                  max_sequence_length: int = 226, use_attention_mask: bool = False,
                  tokenize=tokenize_t5) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (B * n, L, D) float32, attention mask (B * n, L) int64) for a list of prompts,
    each prompt's rows repeated ``n = num_videos_per_prompt`` times in a row.

    ``encoder(input_ids, attention_mask) -> last_hidden_state`` takes MindSpore tensors; the mask is
    passed only with ``use_attention_mask``. (diffusers' Mochi/LTX tile the *mask* instead of repeating
    each row — the same for one prompt; here mask rows stay aligned with their embeddings.)
    """
    import mindspore as ms

    tokens = tokenize(tokenizer, prompts, max_sequence_length)
    mask = ms.Tensor(tokens.attention_mask) if use_attention_mask else None
    embeds = encoder(ms.Tensor(tokens.input_ids), mask).asnumpy().astype(np.float32)
    return (np.repeat(embeds, num_videos_per_prompt, axis=0),
            np.repeat(tokens.attention_mask, num_videos_per_prompt, axis=0))


def _as_array(x):
    if x is None:
        return None
    return np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x, dtype=np.float32)


def _check_prompt_args(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds):
    """The argument rules every prompt encoder shares; returns the embeddings as float32 arrays (or None)."""
    if prompt is not None and prompt_embeds is not None:
        raise ValueError("give either `prompt` or `prompt_embeds`, not both: got prompt="
                         f"{prompt!r} and prompt_embeds of shape {np.shape(prompt_embeds)}")
    if prompt is None and prompt_embeds is None:
        raise ValueError("give `prompt` (a string or a list of strings) or precomputed `prompt_embeds`")
    if prompt is not None and not isinstance(prompt, (str, list)):
        raise ValueError(f"`prompt` must be a str or a list of str, got {type(prompt).__name__}")
    if negative_prompt is not None and negative_prompt_embeds is not None:
        raise ValueError("give either `negative_prompt` or `negative_prompt_embeds`, not both: got "
                         f"negative_prompt={negative_prompt!r}")
    prompt_embeds, negative_prompt_embeds = _as_array(prompt_embeds), _as_array(negative_prompt_embeds)
    if prompt_embeds is not None and negative_prompt_embeds is not None \
            and prompt_embeds.shape != negative_prompt_embeds.shape:
        raise ValueError(f"`prompt_embeds` {prompt_embeds.shape} and `negative_prompt_embeds` "
                         f"{negative_prompt_embeds.shape} must have the same shape")
    return prompt_embeds, negative_prompt_embeds


def encode_prompt(tokenizer, encoder, prompt: str | list[str] | None, negative_prompt: str | list[str] | None = None,
                  *, do_cfg: bool, num_videos_per_prompt: int = 1, max_sequence_length: int = 226,
                  prompt_embeds=None, negative_prompt_embeds=None, use_attention_mask: bool = False,
                  return_attention_mask: bool = False, prompt_attention_mask=None,
                  negative_prompt_attention_mask=None, tokenize=tokenize_t5):
    """``(prompt_embeds, negative_prompt_embeds)`` as numpy float32, or with ``return_attention_mask``
    ``(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)``.

    Give ``prompt`` or precomputed ``prompt_embeds`` (used as they are, not repeated — as diffusers).
    With ``do_cfg`` and no ``negative_prompt_embeds``, ``negative_prompt`` (default "") is encoded; a
    string is used for every prompt, a list must match the prompts one to one. Without ``do_cfg`` the
    negative embeddings are returned as given (usually None). Masks given with precomputed embeddings
    are passed through.
    """
    prompt_embeds, negative_prompt_embeds = _check_prompt_args(prompt, negative_prompt, prompt_embeds,
                                                               negative_prompt_embeds)

    embed = dict(num_videos_per_prompt=num_videos_per_prompt, max_sequence_length=max_sequence_length,
                 use_attention_mask=use_attention_mask, tokenize=tokenize)
    prompt = [prompt] if isinstance(prompt, str) else prompt
    batch_size = len(prompt) if prompt is not None else prompt_embeds.shape[0]
    if prompt_embeds is None:
        prompt_embeds, prompt_attention_mask = embed_prompts(tokenizer, encoder, prompt, **embed)

    if do_cfg and negative_prompt_embeds is None:
        negative_prompt = negative_prompt or ""
        if isinstance(negative_prompt, str):
            negative_prompt = batch_size * [negative_prompt]
        if prompt is not None and type(prompt) is not type(negative_prompt):
            raise TypeError(f"`negative_prompt` must be a str or a list like `prompt`, got "
                            f"{type(negative_prompt).__name__}")
        if len(negative_prompt) != batch_size:
            raise ValueError(f"`negative_prompt` has {len(negative_prompt)} entries but there are {batch_size} "
                             f"prompts; give one negative prompt per prompt, or a single string for all")
        negative_prompt_embeds, negative_prompt_attention_mask = embed_prompts(
            tokenizer, encoder, negative_prompt, **embed)

    if return_attention_mask:
        return prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask
    return prompt_embeds, negative_prompt_embeds


# ---------------------------------------------------------------------------------------------------
# CLIP (Stable Diffusion 1.x text encoder: AnimateDiff, I2VGen-XL)


def tokenize_clip(tokenizer, prompts: list[str], max_length: int | None = None) -> Tokens:
    """CLIP tokenization as diffusers' StableDiffusion/AnimateDiff ``encode_prompt``: ``<|startoftext|>``
    prompt ``<|endoftext|>``, padded with ``<|endoftext|>`` to ``max_length`` (default the tokenizer's
    ``model_max_length``, 77), longer prompts truncated (keeping the end token) with a warning."""
    max_length = max_length or tokenizer.model_max_length
    return _padded_tokens(tokenizer, prompts, max_length, f"CLIP can only handle sequences up to {max_length} tokens")


def _clip_embed(tokenizer, text_encoder, prompts: list[str], max_length: int | None, clip_skip: int | None):
    import mindspore as ms

    tokens = tokenize_clip(tokenizer, prompts, max_length)
    mask = ms.Tensor(tokens.attention_mask) if getattr(text_encoder, "use_attention_mask", False) else None
    return text_encoder.encode(ms.Tensor(tokens.input_ids), mask, clip_skip).asnumpy().astype(np.float32)


def encode_prompt_clip(tokenizer, text_encoder, prompt: str | list[str] | None,
                       negative_prompt: str | list[str] | None = None, *, do_cfg: bool,
                       num_videos_per_prompt: int = 1, clip_skip: int | None = None, prompt_embeds=None,
                       negative_prompt_embeds=None, clip_skip_negative: bool = False):
    """``(prompt_embeds (B * n, 77, D), negative_prompt_embeds (B * n, 77, D) or None)`` as numpy float32,
    as diffusers' StableDiffusionPipeline / AnimateDiffPipeline.encode_prompt compute them.

    ``text_encoder`` is a ``toolkit.models.clip`` text model (``encode(ids, mask, clip_skip)``); the
    tokenizer's attention mask is passed only if its config sets ``use_attention_mask``. ``clip_skip=k``
    takes the output of the k-th layer from the end through ``final_layer_norm``. As in those pipelines
    the *negative* prompt is encoded without ``clip_skip``; I2VGen-XL applies it to both
    (``clip_skip_negative=True``). Every row, including precomputed ``prompt_embeds`` /
    ``negative_prompt_embeds``, is repeated ``n = num_videos_per_prompt`` times in a row.
    With ``do_cfg`` and no ``negative_prompt_embeds`` the negative prompt ("" by default) is tokenized to
    the length of ``prompt_embeds``; a single string is used for every prompt (diffusers accepts that
    only for one prompt), a list must match the prompts one to one.
    """
    prompt_embeds, negative_prompt_embeds = _check_prompt_args(prompt, negative_prompt, prompt_embeds,
                                                               negative_prompt_embeds)

    if prompt_embeds is None:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        prompt_embeds = _clip_embed(tokenizer, text_encoder, prompts, None, clip_skip)
    batch_size = prompt_embeds.shape[0]

    if do_cfg and negative_prompt_embeds is None:
        if negative_prompt is None:
            negative_prompt = [""] * batch_size
        elif prompt is not None and type(prompt) is not type(negative_prompt):
            raise TypeError(f"`negative_prompt` must be a str or a list like `prompt`, got "
                            f"{type(negative_prompt).__name__} for a {type(prompt).__name__} prompt")
        elif isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * batch_size
        elif len(negative_prompt) != batch_size:
            raise ValueError(f"`negative_prompt` has {len(negative_prompt)} entries but there are {batch_size} "
                             f"prompts; give one negative prompt per prompt, or a single string for all")
        negative_prompt_embeds = _clip_embed(tokenizer, text_encoder, list(negative_prompt),
                                             prompt_embeds.shape[1], clip_skip if clip_skip_negative else None)

    prompt_embeds = np.repeat(prompt_embeds, num_videos_per_prompt, axis=0)
    if do_cfg:
        negative_prompt_embeds = np.repeat(negative_prompt_embeds, num_videos_per_prompt, axis=0)
    return prompt_embeds, negative_prompt_embeds
