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
