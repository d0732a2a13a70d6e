"""One shape for every task's predictions, and ``dlguide predict`` options anywhere on the line.

Every row starts with ``"input"`` (the core adds it when a task's ``encode`` does not);
classifiers share ``"label"``, ``"probability"`` and ``"top"`` (``dlguide.encode_classes``);
tasks that write files name them under ``"file"``.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import pytest

from dlguide import RawInput, encode_classes, load_run, predict, run_task
from dlguide._cli import main
from dlguide._inference import encode_outputs, format_row
from dlguide._plugins import get_runtime
from dlguide._runs import build_task

#: the plugins of this repository (the example plugin is written as a third party's would be)
FIRST_PARTY = {"vision", "nlp", "recsys", "medical", "example"}
#: settings of a tiny run (with fast_dev_run=true) of each first-party task, in the order they run
TINY: dict[str, list[str]] = {
    "example.sine": [],
    "vision.classify": [],
    "vision.gan": ["classifier={root}/vision.classify", "quality_samples=20", "g_features=8", "d_features=8",
                   "latent_dim=8"],
    "nlp.classify": ["embedding_dim=8", "hidden_size=8", "max_length=12", "batch_size=16"],
    "medical.classify": ["image_size=32", "synthetic_per_class=5", "batch_size=4"],
    "medical.segment": ["batch_size=2", "samples_per_volume=2", "patch_size=[16,16,16]", "channels=[8,16]",
                        "sw_batch_size=8", "synthetic_cases=5", "synthetic_size=32"],
    "recsys.rank": ["model=mf"],
}
CLASSIFIER_KEYS = ["input", "label", "probability", "top"]
#: the keys of each task's rows, in order
KEYS = {
    "example.sine": ["input", "y", "sin(x)"],
    "vision.classify": CLASSIFIER_KEYS,
    "nlp.classify": CLASSIFIER_KEYS,
    "medical.classify": CLASSIFIER_KEYS,
    "vision.gan": ["input", "file"],
    "medical.segment": ["input", "file", "shape", "voxels"],
    "recsys.rank": ["input", "note", "items"],
}
#: the line every classifier prints: the input, the best class and its probability, the runners-up
CLASSIFIER_LINE = re.compile(r"^(?P<input>.+)  ->  (?P<label>\S+) \d\.\d\d  \((\S+ \d\.\d\d)(, \S+ \d\.\d\d)*\)$")


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """Each first-party task: its reloaded tiny run and the rows it gives up to two of its reference inputs."""
    root = tmp_path_factory.mktemp("shape")
    found = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(root / "cache"))  # generated data sets stay out of the user's cache
        for name, settings in TINY.items():
            sets = ["fast_dev_run=true", *(s.format(root=root) for s in settings)]
            run_task(name, overrides=sets, out=root / name, progress="none")
            task = load_run(root / name)
            if task.reference_from_data:
                source = build_task(name, overrides=sets)
                raws = source.reference_inputs(source.build_data(), 2)
            else:
                raws = task.reference_inputs(None, 2)
            out = root / "predictions" / name if task.writes_files else None
            found[name] = task, predict(task, raws, out_dir=out)
    return found


def test_every_first_party_task_is_checked():
    tasks = {e.name for e in get_runtime().registry.entries("task") if e.owner in FIRST_PARTY}
    assert tasks == set(TINY) == set(KEYS)


@pytest.mark.slow
def test_every_first_party_task_gives_rows_of_the_one_shape(predictions):
    for name, (task, rows) in predictions.items():
        assert rows, name
        for row in rows:
            assert list(row) == KEYS[name], (name, row)
            assert json.loads(json.dumps(row)) == row, name
            line = task.format_prediction(row)
            assert "\n" not in line and " ".join(str(row["input"]).split()) in line, (name, line)


@pytest.mark.slow
def test_classifiers_share_label_probability_top_and_one_printed_line(predictions):
    for name in ("vision.classify", "nlp.classify", "medical.classify"):
        task, rows = predictions[name]
        for row in rows:
            top = row["top"]
            assert all(list(c) == ["label", "probability"] for c in top), (name, top)
            assert top[0] == {"label": row["label"], "probability": row["probability"]}
            probabilities = [c["probability"] for c in top]
            assert probabilities == sorted(probabilities, reverse=True)
            assert all(round(p, 4) == p and 0 <= p <= 1 for p in probabilities)
            line = CLASSIFIER_LINE.match(task.format_prediction(row))
            assert line and line["label"] == row["label"], (name, task.format_prediction(row))


@pytest.mark.slow
def test_tasks_that_write_files_name_them_under_file(predictions):
    for name in ("vision.gan", "medical.segment"):
        task, rows = predictions[name]
        assert task.writes_files
        for row in rows:
            assert Path(row["file"]).is_file() and not {"path", "output"} & set(row), (name, row)


# -- the core's part: "input" for any task ----------------------------------------------------------------
def test_the_core_puts_input_first_when_encode_gives_none():
    """A third party's encode that returns only its own keys gets the input named as the user named it."""
    task = types.SimpleNamespace(writes_files=False, encode=lambda output, sample, raw, out_dir=None: {"y": output})
    raws = [RawInput(value=3), RawInput(value=0.5, name="0.5"), RawInput(value=b"\x89PNG", name="scan.png"),
            RawInput(name="b.png", path=Path("images/b.png")), RawInput(value="a fine film"),
            RawInput(value=float("nan")), RawInput(value=[1, 2]), RawInput(value="x" * 100)]
    rows = encode_outputs(task, [1.0] * len(raws), [None] * len(raws), raws)
    assert [list(row) for row in rows] == [["input", "y"]] * len(raws)
    assert [row["input"] for row in rows] == [3, 0.5, "scan.png", str(Path("images/b.png")), "a fine film", "nan",
                                              "[1, 2]", "x" * 57 + "..."]
    json.dumps(rows)


def test_a_task_that_names_its_input_keeps_its_name_first():
    task = types.SimpleNamespace(writes_files=False,
                                 encode=lambda output, sample, raw, out_dir=None: {"y": 1, "input": "its own"})
    assert encode_outputs(task, [0], [None], [RawInput(value=3)]) == [{"input": "its own", "y": 1}]
    wrong = types.SimpleNamespace(writes_files=False, encode=lambda output, sample, raw, out_dir=None: [output])
    with pytest.raises(TypeError, match="encode returned a list; expected a dict"):
        encode_outputs(wrong, [0], [None], [RawInput(value=3)])


def test_encode_classes_ranks_rounds_and_cuts():
    row = encode_classes([0.1, 0.61234, 0.28766], ["a", "b", "c"], RawInput(value="a text"))
    assert row == {"input": "a text", "label": "b", "probability": 0.6123,
                   "top": [{"label": "b", "probability": 0.6123}, {"label": "c", "probability": 0.2877},
                           {"label": "a", "probability": 0.1}]}
    assert format_row(row) == "a text  ->  b 0.61  (c 0.29, a 0.10)"
    assert list(encode_classes([0.5, 0.5], [0, 1])) == ["label", "probability", "top"]  # the core adds input
    assert encode_classes([0.5, 0.5], [0, 1])["label"] == "0"  # a tie goes to the first class, as argmax
    assert len(encode_classes([0.2] * 5, list("abcde"))["top"]) == 3
    assert len(encode_classes([0.2] * 5, list("abcde"), top=None)["top"]) == 5
    assert format_row(encode_classes([1.0], ["only"], RawInput(value="x"))) == "x  ->  only 1.00"
    with pytest.raises(ValueError, match="2 probabilities for 3 classes"):
        encode_classes([0.5, 0.5], ["a", "b", "c"])


def test_the_default_line_shows_the_input_then_the_rest():
    assert format_row({"input": 0.5, "y": 0.47, "sin(x)": 0.4794}) == "0.5  ->  y=0.47  sin(x)=0.4794"
    assert format_row({"input": "two\nlines", "output": [1, 2], "note": "ok"}) == (
        'two lines  ->  output=[1, 2]  note=ok')
    assert format_row({"output": 1}) == "output=1"


# -- predict's options anywhere on the line -------------------------------------------------------------
@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sine") / "run"
    run_task("example.sine", overrides=["fast_dev_run=true"], out=out, progress="none")
    return str(out)


@pytest.mark.parametrize("argv", [
    ["predict", "--json", "RUN", "0.5", "1"],
    ["predict", "RUN", "--json", "0.5", "1"],
    ["predict", "RUN", "0.5", "--json", "1"],
    ["predict", "RUN", "0.5", "1", "--json"],
    ["--debug", "predict", "RUN", "--json", "--", "0.5", "1"],
], ids=["before-run", "after-run", "between-inputs", "at-the-end", "before-separator"])
def test_predict_takes_json_anywhere(sine_run, capsys, argv):
    assert main([sine_run if word == "RUN" else word for word in argv]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["input"] for row in rows] == [0.5, 1] and list(rows[0]) == ["input", "y", "sin(x)"]


def test_words_after_the_separator_are_inputs_even_with_a_dash(sine_run, capsys, tmp_path):
    (tmp_path / "xs.txt").write_text("2\n")
    assert main(["predict", sine_run, "--json", "--file", str(tmp_path / "xs.txt"), "--", "-1e0", "-0.5"]) == 0
    assert [row["input"] for row in json.loads(capsys.readouterr().out)] == [-1.0, -0.5, 2]
    assert main(["predict", sine_run, "0.5", "--", "--json"]) == 2  # an input, which sine cannot read
    assert capsys.readouterr().err.strip() == "dlguide: error: example.sine predicts from numbers, not '--json'"


def test_an_unknown_option_is_still_a_one_line_usage_error(sine_run, capsys):
    assert main(["predict", sine_run, "0.5", "--bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dlguide: error: unrecognized arguments: --bogus") and err.count("\n") == 1
    assert "(see 'dlguide predict --help')" in err
    assert main(["list", "--bogus"]) == 2  # other commands as before
    assert "unrecognized arguments: --bogus (see 'dlguide --help')" in capsys.readouterr().err


def test_lines_without_json_start_with_the_input(sine_run, capsys):
    assert main(["predict", sine_run, "0.5"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("0.5  ->  y=") and line.endswith("  sin(x)=0.4794")
