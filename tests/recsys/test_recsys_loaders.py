"""Every recsys loader fed hostile data (empty, truncated, wrong type, wrong shape, NaN and infinite
ratings, one user, one item, duplicate rows): each ends before the first epoch in one line naming the
bad file, line or value and what was expected, a UsageError (exit 2), and leaves no run directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import write_clustered

from dlguide import UsageError, run_task
from dlguide.testing import run_cli

TINY = ["topk=[5]", "monitor=val/ndcg@5", "model=mf", "embedding_dim=8", "batch_size=128", "epochs=1",
        "limit_train_batches=1"]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict[str, str]:
    """A small interaction set that trains (8 users with 14 interactions each, 30 items)."""
    folder = write_clustered(tmp_path_factory.mktemp("good"), n_users=8, n_items=30, per_user=14)
    return {name: (folder / name).read_text() for name in ("interactions.csv", "users.csv", "items.csv")}


def u_data() -> str:
    """MovieLens 100k's u.data (tab separated, no header): 8 users, 15 items each."""
    return "".join(f"{u}\t{i}\t{1 + u * i % 5}\t{1000 + 10 * u + i}\n" for u in range(1, 9) for i in range(1, 31)
                   if (u + i) % 2 == 0)


def ratings_dat() -> str:
    return u_data().replace("\t", "::")


def cut(text: str, at: str) -> str:
    """``text`` up to just after the first ``at`` of its last 20 lines: a file cut in the middle of a line."""
    lines = text.splitlines()
    tail = lines[-20]
    return "\n".join(lines[:-20]) + "\n" + tail[: tail.index(at) + len(at)]


# case -> (dataset, files of data_dir: name -> text (None: a folder), extra settings, key phrase of the message)
CASES: dict[str, tuple[str, dict[str, str | bytes | None] | None, list[str], str]] = {
    # interactions: data_dir/interactions.csv with optional users.csv / items.csv
    "interactions/empty-folder": ("interactions", {}, [], r"lacks interactions\.csv \(columns user,item"),
    "interactions/empty-file": ("interactions", {"interactions.csv": ""}, [],
                                r"interactions\.csv is empty; expected a header line"),
    "interactions/header-only": ("interactions", {"interactions.csv": "user,item,rating,timestamp\n"}, [],
                                 r"interactions\.csv holds no interactions"),
    "interactions/truncated": ("interactions", None, [], r"interactions\.csv, line 94 has no item id"),
    "interactions/binary": ("interactions", {"interactions.csv": b"\x89PNG\r\n\x1a\n\xff\xfe"}, [],
                            r"interactions\.csv is not utf-8 text: invalid byte 0x89 at offset 0"),
    "interactions/folder": ("interactions", {"interactions.csv": None}, [],
                            r"interactions\.csv is a folder; expected a file"),
    "interactions/missing-column": ("interactions", {"interactions.csv": "user,product\nu1,i1\n"}, [],
                                    r"lacks column\(s\) 'item'; expected a header with user,item"),
    "interactions/extra-fields": ("interactions", {"+interactions.csv": "u1,i3,4,1000,oops\n"}, [],
                                  r"cannot read .*interactions\.csv: expected 4 fields in line 114, saw 5"),
    "interactions/nan-rating": ("interactions", {"+interactions.csv": "u1,i3,nan,1000\n"}, [],
                                r"interactions\.csv, line 114: rating 'nan' is not a number"),
    "interactions/inf-rating": ("interactions", {"+interactions.csv": "u1,i3,inf,1000\n"}, [],
                                r"interactions\.csv, line 114: rating 'inf' is not a finite number"),
    "interactions/inf-timestamp": ("interactions", {"+interactions.csv": "u1,i3,4,-inf\n"}, [],
                                   r"interactions\.csv, line 114: timestamp '-inf' is not a finite number"),
    "interactions/unrated-with-threshold": ("interactions", {"+interactions.csv": "u1,i3,,1000\n"},
                                            ["rating_threshold=3"],
                                            r"rating_threshold=3 needs a rating on every interaction, but 1 in "
                                            r"interactions\.csv in .* have none"),
    "interactions/missing-timestamps": ("interactions", {"+interactions.csv": "u1,i3,4,\n"}, ["split=leave-one-out"],
                                        r"some or all interactions have no timestamps; use split=random"),
    "interactions/one-user": ("interactions", {"interactions.csv": "user,item\n" + "".join(
        f"u1,i{i}\n" for i in range(40))}, [], r"involve 1 user only; a recommender needs at least 2 users"),
    "interactions/one-item": ("interactions", {"interactions.csv": "user,item\n" + "".join(
        f"u{u},i1\n" for u in range(40))}, ["topk=[1]", "monitor=val/ndcg@1"],
        r"involve 1 item only; a recommender needs at least 2 users and 2 items"),
    "interactions/conflicting-user-rows": ("interactions", {"+interactions.csv": "", "+users.csv": "u1,g9,99\n"}, [],
                                           r"users\.csv lists user 'u1' more than once with different values"),
    "interactions/items-folder": ("interactions", {"+interactions.csv": "", "items.csv": None}, [],
                                  r"items\.csv is a folder; expected a file"),
    "interactions/semicolons": ("interactions", {"interactions.csv": "user;item\nu1;i1\n"}, [],
                                r"lacks column\(s\) 'user', 'item'; expected a header with user,item"),
    # ml-100k with data_dir: MovieLens 100k's own u.data
    "ml-100k/empty-u.data": ("ml-100k", {"u.data": ""}, [],
                             r"u\.data is empty; expected tab-separated lines of user, item, rating, timestamp"),
    "ml-100k/truncated-u.data": ("ml-100k", {"u.data": u_data() + "5\t12"}, [],
                                 r"u\.data, line 121 has no rating; expected user, item, rating and timestamp"),
    "ml-100k/three-columns": ("ml-100k", {"u.data": "".join(line.rsplit("\t", 1)[0] + "\n"
                                                            for line in u_data().splitlines())}, [],
                              r"u\.data has 3 columns; expected 4 tab-separated \(user, item, rating, timestamp\)"),
    "ml-100k/comma-separated": ("ml-100k", {"u.data": u_data().replace("\t", ",")}, [],
                                r"u\.data has 1 columns; expected 4 tab-separated"),
    "ml-100k/nan-rating": ("ml-100k", {"u.data": u_data() + "1\t3\tNaN\t5\n"}, [],
                           r"u\.data, line 121: rating 'NaN' is not a number"),
    "ml-100k/folder": ("ml-100k", {"u.data": None}, [], r"u\.data is a folder; expected a file"),
    "ml-100k/short-u.item": ("ml-100k", {"u.data": u_data(), "u.item": "1|Toy Story (1995)|01-Jan-1995\n"}, [],
                             r"u\.item has 3 columns; expected 24 '\|'-separated"),
    # movielens: 1M's ratings.dat or 20M's ratings.csv
    "movielens/empty-folder": ("movielens", {}, [], r"holds no MovieLens ratings file; expected u\.data"),
    "movielens/empty-ratings.dat": ("movielens", {"ratings.dat": ""}, [],
                                    r"ratings\.dat is empty; expected '::'-separated lines"),
    "movielens/truncated-ratings.dat": ("movielens", {"ratings.dat": cut(ratings_dat(), "::")}, [],
                                        r"ratings\.dat, line 101 has no item id"),
    "movielens/ratings.csv-header-only": ("movielens", {"ratings.csv": "userId,movieId,rating,timestamp\n"}, [],
                                          r"ratings\.csv holds no interactions"),
}


def write(folder: Path, files: dict[str, str | bytes | None], good: dict[str, str]) -> Path:
    """``files`` in ``folder``; a name starting with '+' appends to the good file of that name."""
    folder.mkdir()
    for name, content in files.items():
        if name.startswith("+"):
            name = name[1:]
            content = good[name] + str(content)
        if content is None:
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


def data_for(case: str, tmp_path: Path, good: dict[str, str]) -> tuple[str, Path, list[str], str]:
    dataset, files, sets, phrase = CASES[case]
    if files is None:  # the good set cut in the middle of a line
        files = {"interactions.csv": cut(good["interactions.csv"], ",")}
    return dataset, write(tmp_path / "data", files, good), sets, phrase


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_data_is_one_line_usage_error(runtime, good, tmp_path, case):
    dataset, data_dir, sets, phrase = data_for(case, tmp_path, good)
    out = tmp_path / "run"
    with pytest.raises(UsageError, match=phrase) as info:
        run_task("recsys.rank", overrides=[*TINY, f"dataset={dataset}", f"data_dir={data_dir}", *sets], out=out,
                 runtime=runtime, progress="none")
    assert "\n" not in str(info.value)
    assert not out.exists()


def test_duplicate_rows_are_dropped_with_a_note(runtime, good, tmp_path):
    lines = good["interactions.csv"].splitlines()
    data_dir = write(tmp_path / "data", {"+interactions.csv": "\n".join(lines[1:11]) + "\n"}, good)
    result = run_task("recsys.rank", overrides=[*TINY, "dataset=interactions", f"data_dir={data_dir}"],
                      out=tmp_path / "run", runtime=runtime, progress="none")
    assert "10 duplicate (user, item) interactions" in (result.run_dir / "task.json").read_text()


def test_movielens_1m_titles_keep_their_colons(tmp_path):
    from dlguide_recsys.datasets import movielens

    (tmp_path / "ratings.dat").write_text("1::260::5::978300760\n2::1196::4::978298413\n")
    (tmp_path / "movies.dat").write_text("260::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
                                         "1196::Star Wars: Episode V - The Empire Strikes Back (1980)::Action\n")
    items = movielens(tmp_path).items
    assert items.loc["260", "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc["260", "genres"] == "Action|Sci-Fi" and items.loc["1196", "decade"] == "1980s"


@pytest.mark.parametrize("inter, phrase", [
    ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n1\t", r"ml-100k\.inter, line 3 has no "
                                                                                     r"item id"),
    ("", r"ml-100k\.inter is empty"),
], ids=["truncated", "empty"])
def test_a_damaged_recbole_file_is_one_line(runtime, tmp_path, monkeypatch, inter, phrase):
    from dlguide_recsys import datasets

    (tmp_path / "ml-100k.inter").write_text(inter)
    (tmp_path / "ml-100k.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\n1\t20\tM\tx\n")
    (tmp_path / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                           "2\tHeat\t1995\tAction\n")
    monkeypatch.setattr(datasets, "recbole_folder", lambda: tmp_path)
    with pytest.raises(UsageError, match=phrase):
        run_task("recsys.rank", overrides=[*TINY, "dataset=ml-100k"], out=tmp_path / "run", runtime=runtime,
                 progress="none")


@pytest.mark.parametrize("case", ["interactions/inf-rating", "interactions/one-user"])
def test_the_command_line_prints_one_line_and_exits_2(good, tmp_path, case):
    dataset, data_dir, sets, phrase = data_for(case, tmp_path, good)
    out = tmp_path / "run"
    res = run_cli("run", "recsys.rank", "--out", out, "--set", *TINY, f"dataset={dataset}", f"data_dir={data_dir}",
                  *sets)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("dlguide: error: ") and re.search(phrase, lines[0]), lines[0]
    assert not out.exists()
