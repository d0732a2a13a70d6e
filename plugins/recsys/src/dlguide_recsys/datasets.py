"""Readers of interaction data sets, each returning the same ``RawData`` of text ids.

    ml-100k       MovieLens 100k: the recbole package's atomic files (offline), or u.data/u.user/u.item in data_dir
    movielens     data_dir holding MovieLens 100k (u.data), 1M (ratings.dat) or 20M/25M/latest (ratings.csv)
    interactions  data_dir/interactions.csv (user,item[,rating,timestamp]) with optional users.csv and items.csv

Each is registered for ``recsys.rank`` (``--set dataset=NAME``) as a loader called as
``loader(data_dir: Path | None) -> RawData``, with the run's ``data_dir``; a loader of another
package registered for the task follows the same signature.

Features are categorical text: a column per feature, several values of one feature joined
by ``|`` (a film's genres). An items table may have a ``title`` column, used for display only.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from dlguide import UsageError, first_line, package_file

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
                 "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
                 "War", "Western")
# MovieLens 1M codes ages by the lower end of these groups; 100k gives years, binned the same way
AGE_GROUPS = ((1, "under 18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"),
              (56, "56+"))
YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")


@dataclasses.dataclass
class RawData:
    """Interactions with text ids, as read.

    ``interactions`` has columns user, item (str), rating and timestamp (float, NaN when the
    file has none); ``users`` and ``items`` are indexed by id and hold feature columns.
    """

    source: str
    interactions: pd.DataFrame
    users: pd.DataFrame | None = None
    items: pd.DataFrame | None = None

    @property
    def has_ratings(self) -> bool:
        return bool(self.interactions["rating"].notna().any())

    @property
    def has_timestamps(self) -> bool:
        return bool(self.interactions["timestamp"].notna().all())


# -- shared parsing -------------------------------------------------------------------------
def _read_table(path: Path, sep: str, names: Sequence[str] | None, encoding: str = "utf-8") -> pd.DataFrame:
    """Every column as text; headerless files get ``names`` and must have that many columns. The
    frame's index is each row's line number in the file, which the checks name."""
    if path.is_dir():
        raise UsageError(f"{path} is a folder; expected a file")
    separated = {"\t": "tab", "|": "'|'", "::": "'::'", ",": "comma"}[sep]
    try:
        if sep == "::":  # MovieLens 1M; titles hold single colons ("Star Wars: Episode IV"), so split on '::' only
            text = path.read_text(encoding=encoding).replace("::", "\x1f")
            frame = pd.read_csv(io.StringIO(text), sep="\x1f", header=None, dtype=str, keep_default_na=False,
                                quoting=3, skip_blank_lines=False)
        else:
            frame = pd.read_csv(path, sep=sep, header=None if names else 0, dtype=str, encoding=encoding,
                                keep_default_na=False, quoting=3 if sep != "," else 0, skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise UsageError(f"{path} is empty; expected " + (f"{separated}-separated lines of {', '.join(names)}" if names
                                                          else "a header line and one row per record")) from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not {encoding} text: invalid byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start}") from None
    except (OSError, pd.errors.ParserError) as exc:
        message = first_line(exc).removeprefix("Error tokenizing data. C error: ")
        raise UsageError(f"cannot read {path}: {message[:1].lower()}{message[1:]}") from None
    frame.index = pd.RangeIndex(1 if names else 2, len(frame) + (1 if names else 2))  # line numbers
    frame = frame[~frame.eq("").all(axis=1)]  # blank lines (a short line's missing fields read as "" too)
    if names:
        if frame.shape[1] < len(names):
            raise UsageError(f"{path} has {frame.shape[1]} columns; expected {len(names)} {separated}-separated "
                             f"({', '.join(names)})")
        frame = frame.iloc[:, :len(names)]
        frame.columns = list(names)
    else:
        frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _require(frame: pd.DataFrame, path: Path, required: Sequence[str], expected: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UsageError(f"{path} lacks column(s) {', '.join(map(repr, missing))}; expected a header with {expected}")


def _numbers(values: pd.Series, path: Path, column: str) -> np.ndarray:
    text = values.str.strip()
    parsed = pd.to_numeric(text, errors="coerce")
    bad = parsed.isna() & text.ne("")
    if bad.any():
        raise UsageError(f"{path}, line {bad.idxmax()}: {column} {values[bad].iloc[0]!r} is not a number")
    infinite = np.isinf(parsed.to_numpy(dtype=np.float64))
    if infinite.any():
        line = values.index[int(np.argmax(infinite))]
        raise UsageError(f"{path}, line {line}: {column} {values[line]!r} is not a finite number")
    return parsed.to_numpy(dtype=np.float64)


def _interactions(frame: pd.DataFrame, path: Path, complete: bool = False) -> pd.DataFrame:
    """Interactions of a frame from ``_read_table``; with ``complete`` (MovieLens' own files, where every
    line has all four fields) a line without its rating or timestamp is cut short: an error."""
    out = pd.DataFrame({"user": frame["user"].str.strip(), "item": frame["item"].str.strip()})
    for column in ("user", "item"):
        if (out[column] == "").any():
            raise UsageError(f"{path}, line {(out[column] == '').idxmax()} has no {column} id")
    for column in ("rating", "timestamp") if complete else ():
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise UsageError(f"{path}, line {empty.idxmax()} has no {column}; expected user, item, rating and "
                             "timestamp on every line")
    for column in ("rating", "timestamp"):
        out[column] = _numbers(frame[column], path, column) if column in frame else np.nan
    if out.empty:
        raise UsageError(f"{path} holds no interactions")
    return out.reset_index(drop=True)


def _features(table: pd.DataFrame, path: Path, kind: str) -> pd.DataFrame:
    """A users or items table indexed by id; an id listed twice with different values is an error."""
    table = table.set_index(table[kind].str.strip()).drop(columns=[kind])
    table = table[~table.reset_index().duplicated().to_numpy()]  # a row repeated as it is says nothing new
    repeated = table.index.duplicated()
    if repeated.any():
        raise UsageError(f"{path} lists {kind} {table.index[repeated][0]!r} more than once with different values; "
                         f"expected one row per {kind}")
    return table


def age_group(age: str) -> str:
    if not age.strip().isdigit():
        return ""
    years = int(age)
    return next(label for low, label in reversed(AGE_GROUPS) if years >= low or low == 1)


def decade(year: str) -> str:
    return f"{year[:3]}0s" if len(year) == 4 and year.isdigit() else ""


def _year_of_title(title: str) -> str:
    match = YEAR_IN_TITLE.search(title)
    return match.group(1) if match else ""


# -- MovieLens 100k --------------------------------------------------------------------------
def recbole_folder() -> Path:
    """The ml-100k folder inside the installed recbole package (found without importing it)."""
    return package_file("recbole", "dataset_example/ml-100k/ml-100k.inter", "recbole", purpose="ml-100k").parent


def _atomic(path: Path) -> pd.DataFrame:
    """A recbole atomic file: tab separated, with typed headers (``user_id:token``)."""
    frame = _read_table(path, "\t", None)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def ml_100k(data_dir: Path | None = None) -> RawData:
    """MovieLens 100k with user (age group, gender, occupation) and item (decade, genres) features."""
    if data_dir is not None:
        return _ml100k_files(data_dir)
    folder = recbole_folder()
    inter = _atomic(folder / "ml-100k.inter").rename(columns={"user_id": "user", "item_id": "item"})
    users = _atomic(folder / "ml-100k.user")
    items = _atomic(folder / "ml-100k.item")
    user_table = pd.DataFrame({"age": users["age"].map(age_group), "gender": users["gender"],
                               "occupation": users["occupation"]})
    user_table.index = users["user_id"]
    item_table = pd.DataFrame({"title": items["movie_title"], "decade": items["release_year"].map(decade),
                               "genres": items["class"].str.split().str.join("|")})
    item_table.index = items["item_id"]
    return RawData(f"recbole's ml-100k ({folder})", _interactions(inter, folder / "ml-100k.inter"),
                   user_table, item_table)


def _ml100k_files(folder: Path) -> RawData:
    ratings = folder / "u.data"
    if not ratings.exists():
        raise UsageError(f"{folder} lacks u.data, the MovieLens 100k ratings file")
    inter = _interactions(_read_table(ratings, "\t", ("user", "item", "rating", "timestamp")), ratings,
                          complete=True)
    users = items = None
    if (folder / "u.user").is_file():
        raw = _read_table(folder / "u.user", "|", ("user", "age", "gender", "occupation", "zip"))
        users = pd.DataFrame({"age": raw["age"].map(age_group), "gender": raw["gender"],
                              "occupation": raw["occupation"]})
        users.index = raw["user"]
    if (folder / "u.item").is_file():
        names = ("item", "title", "release", "video", "url", *ML100K_GENRES)
        raw = _read_table(folder / "u.item", "|", names, encoding="latin-1")
        flags = raw[list(ML100K_GENRES)].to_numpy() == "1"
        genres = ["|".join(g for g, on in zip(ML100K_GENRES, row) if on) for row in flags]
        items = pd.DataFrame({"title": raw["title"], "decade": raw["release"].str[-4:].map(decade),
                              "genres": genres})
        items.index = raw["item"]
    return RawData(f"MovieLens 100k files in {folder}", inter, users, items)


# -- other MovieLens releases and generic files -------------------------------------------------
def movielens(data_dir: Path | None) -> RawData:
    """MovieLens 100k (u.data), 1M (ratings.dat, users.dat, movies.dat) or 20M/25M/latest (ratings.csv, movies.csv)."""
    if data_dir is None:
        raise UsageError("dataset 'movielens' reads a MovieLens folder: set data_dir (u.data, ratings.dat or "
                         "ratings.csv inside)")
    if (data_dir / "u.data").is_file():
        return _ml100k_files(data_dir)
    if (data_dir / "ratings.dat").is_file():
        path = data_dir / "ratings.dat"
        inter = _interactions(_read_table(path, "::", ("user", "item", "rating", "timestamp")), path,
                              complete=True)
        users = items = None
        if (data_dir / "users.dat").is_file():
            raw = _read_table(data_dir / "users.dat", "::", ("user", "gender", "age", "occupation", "zip"))
            users = pd.DataFrame({"age": raw["age"].map(age_group), "gender": raw["gender"],
                                  "occupation": raw["occupation"]})
            users.index = raw["user"]
        if (data_dir / "movies.dat").is_file():
            raw = _read_table(data_dir / "movies.dat", "::", ("item", "title", "genres"), encoding="latin-1")
            items = _titled_items(raw)
        return RawData(f"MovieLens 1M files in {data_dir}", inter, users, items)
    if (data_dir / "ratings.csv").is_file():
        path = data_dir / "ratings.csv"
        frame = _read_table(path, ",", None).rename(columns={"userId": "user", "movieId": "item"})
        _require(frame, path, ("user", "item"), "userId,movieId,rating,timestamp")
        items = None
        if (data_dir / "movies.csv").is_file():
            raw = _read_table(data_dir / "movies.csv", ",", None).rename(columns={"movieId": "item"})
            _require(raw, data_dir / "movies.csv", ("item", "title", "genres"), "movieId,title,genres")
            items = _titled_items(raw)
        return RawData(f"MovieLens files in {data_dir}", _interactions(frame, path), None, items)
    raise UsageError(f"{data_dir} holds no MovieLens ratings file; expected u.data (100k), ratings.dat (1M) "
                     "or ratings.csv (20M, 25M, latest)")


def _titled_items(raw: pd.DataFrame) -> pd.DataFrame:
    genres = raw["genres"].replace("(no genres listed)", "")
    items = pd.DataFrame({"title": raw["title"], "decade": raw["title"].map(_year_of_title).map(decade),
                          "genres": genres})
    items.index = raw["item"]
    return items


def interactions_csv(data_dir: Path | None) -> RawData:
    """``interactions.csv`` (user,item[,rating,timestamp]) and optional ``users.csv``/``items.csv`` of features."""
    if data_dir is None:
        raise UsageError("dataset 'interactions' reads data_dir/interactions.csv: set data_dir")
    path = data_dir / "interactions.csv"
    if not path.exists():
        raise UsageError(f"{data_dir} lacks interactions.csv (columns user,item[,rating,timestamp])")
    frame = _read_table(path, ",", None)
    _require(frame, path, ("user", "item"), "user,item[,rating,timestamp]")
    tables = {}
    for kind in ("user", "item"):
        table_path = data_dir / f"{kind}s.csv"
        if table_path.exists():
            table = _read_table(table_path, ",", None)
            _require(table, table_path, (kind,), f"{kind} and one column per feature")
            tables[kind] = _features(table, table_path, kind)
    return RawData(f"interactions.csv in {data_dir}", _interactions(frame, path), tables.get("user"),
                   tables.get("item"))
