"""Tiny tokenizers written with the `tokenizers` library, for checkpoints that must exist without a hub:
the embedded default model and the test references. They are ordinary transformers tokenizer folders,
loaded by the same code path as a real checkpoint's tokenizer."""
from __future__ import annotations

import string
from pathlib import Path

WORDS = ("a the cat dog walks on grass in of and with video panda guitar bamboo forest plays ship sea sky "
         "red blue green light camera slow motion high quality low blurry man woman car street rocket night "
         "sun bad worst ugly deformed").split()


def write_tiny_t5_tokenizer(folder: str | Path) -> int:
    """A SentencePiece-style unigram tokenizer (T5 conventions: pad=0, eos=1, unk=2, ``</s>`` appended).

    Returns its vocabulary size.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = ([(s, 0.0) for s in specials] + [("▁" + w, -2.0) for w in WORDS] + [("▁", -3.0)]
              + [(c, -5.0) for c in chars])
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                           extra_ids=0)
    fast.save_pretrained(str(folder))
    return len(pieces)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's reversible map from the 256 byte values to printable unicode characters."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def write_tiny_clip_tokenizer(folder: str | Path, model_max_length: int = 77) -> int:
    """A byte-level BPE tokenizer in the CLIPTokenizer format real checkpoints ship: ``vocab.json`` +
    ``merges.txt`` (+ ``tokenizer_config.json``, ``special_tokens_map.json``).

    Laid out like openai/clip-vit-large-patch14's: the 256 byte characters, the same with the end-of-word
    suffix ``</w>``, one merged token per merge (here the merges spell the words of ``WORDS``), then
    ``<|startoftext|>`` (bos) and ``<|endoftext|>`` (eos, pad and unk) as the two last ids.
    Returns its vocabulary size.
    """
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = list(_bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[tuple[str, str]] = []
    for word in WORDS:  # merge each word left to right: c a t</w> -> ca t</w> -> cat</w>
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            merged = parts[0] + parts[1]
            if pair not in merges:
                merges.append(pair)
                if merged not in vocab:
                    vocab.append(merged)
            parts = [merged] + parts[2:]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(vocab)}
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, "do_lower_case": True,
         "errors": "replace", "add_prefix_space": False, **specials}, indent=2))
    return len(vocab)
