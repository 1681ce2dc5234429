"""Tiny transformers models built in code for tests (no hub downloads are possible here).

``save_scripted_gpt2`` builds a zero-layer GPT-2 whose weights form a bigram chain, so greedy decoding
after the chat template's ``<|assistant|>`` marker emits a fixed answer: a real model run through the
real transformers generate/streaming code paths, with a known output.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers

import app.ml.torchvision_compat  # noqa: F401 - transformers imports torchvision; keep this first

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["[UNK]", "[PAD]", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "[CLS]", "[SEP]"]


def make_tokenizer(words: Sequence[str], *, chat_template: str | None = CHAT_TEMPLATE) -> Any:
    """Word-level PreTrainedTokenizerFast over ``words`` plus the special tokens."""
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*SPECIALS, *words]))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token="</s>",
        cls_token="[CLS]",
        sep_token="[SEP]",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>"],
    )
    if chat_template:
        tok.chat_template = chat_template
    return tok


def save_scripted_gpt2(
    path: Path,
    script: Sequence[str],
    *,
    chat_template: str | None = CHAT_TEMPLATE,
    start: str = "<|assistant|>",
) -> None:
    """Save a GPT-2 that answers exactly ``script`` (then EOS) after the prompt's last token ``start``.

    With zero layers the next-token logits depend only on the current token, so the chain
    start -> script[0] -> ... -> EOS is followed greedily whatever the rest of the prompt says.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = make_tokenizer([start, *script], chat_template=chat_template)
    vocab = tok.get_vocab()
    v = len(vocab)
    cfg = GPT2Config(
        vocab_size=v,
        n_embd=v,
        n_layer=0,
        n_head=1,
        n_positions=4096,
        bos_token_id=vocab["</s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    model = GPT2LMHeadModel(cfg)
    chain = [vocab[start], *(vocab[w] for w in script), vocab["</s>"]]
    with torch.no_grad():
        model.transformer.wte.weight.copy_(torch.eye(v))
        model.transformer.wpe.weight.zero_()
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.zero_()
        model.lm_head.weight.zero_()
        for cur, nxt in itertools.pairwise(chain):
            model.lm_head.weight[nxt, cur] = 10.0
    model.save_pretrained(path)
    tok.save_pretrained(path)


def save_random_gpt2(path: Path, words: Sequence[str], *, chat_template: str | None = CHAT_TEMPLATE) -> None:
    """Save a randomly initialised one-layer GPT-2 (its output is gibberish)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tok = make_tokenizer(words, chat_template=chat_template)
    cfg = GPT2Config(
        vocab_size=len(tok.get_vocab()),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=4096,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)


def save_tiny_bert(path: Path, words: Sequence[str], *, classifier: bool = False) -> None:
    """Save a random tiny BERT encoder (or a 1-label cross-encoder) with a word tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(0)
    tok = make_tokenizer(words, chat_template=None)
    cfg = BertConfig(
        vocab_size=len(tok.get_vocab()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    model = BertForSequenceClassification(cfg) if classifier else BertModel(cfg)
    model.save_pretrained(path)
    tok.save_pretrained(path)
