"""Demo volumes for the embedded default: a tiny random Qwen2 (tokenizer trained here, ChatML template) and a
small chat dataset, so a newcomer's first training run is real and finishes on CPU. No hub download."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CORPUS = [
    "The GPU cluster trains language models on an RTX 5090 in a homelab.",
    "A user asks a question and the assistant answers it in one sentence.",
    "Checkpoints, adapters and datasets live on persistent volumes.",
    "Quantisation to four bits keeps the base model small in memory.",
] * 40


def build_tiny_qwen(out: Path, vocab_size: int = 512) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS, trainer)
    # Qwen's layout: EOS is <|im_end|>, padding is the distinct <|endoftext|>.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    tokenizer.save_pretrained(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(out)
    return out


DEMO_DATASET = [
    ("What does the rtx5090 pool run?", "QLoRA fine-tuning jobs on one RTX 5090."),
    ("Where are checkpoints kept?", "On the checkpoints volume, one folder per run."),
    ("What happens on preemption?", "The trainer saves a checkpoint and resumes from it on the next start."),
    ("Which formats can a dataset use?", "OpenAI messages, ShareGPT, alpaca or plain text, as JSONL."),
]


def ensure_demo_volumes(root: Path) -> Path:
    """models/tiny-qwen and data/demo-chat.jsonl under root (built once); returns root."""
    import json

    if not (root / "models" / "tiny-qwen" / "config.json").is_file():
        build_tiny_qwen(root / "models" / "tiny-qwen")
    data = root / "data" / "demo-chat.jsonl"
    if not data.is_file():
        data.parent.mkdir(parents=True, exist_ok=True)
        lines = [
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            for q, a in DEMO_DATASET * 16
        ]
        data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
