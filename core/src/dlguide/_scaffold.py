"""``dlguide plugin new`` and ``dlguide plugin update``: a plugin package rendered with copier
from the template shipped in ``dlguide/templates/plugin``, and later template versions merged
into it with the author's own edits kept.

copier's update is a 3-way merge: it renders the version of the template that made the plugin
and the current one, and applies the difference to the plugin. Both versions must be in a git
repository, and the installed dlguide ships only its own. So every command first records the
shipped template in a git repository of template versions in the user's cache (one commit and
tag per ``_template_version`` of ``copier.yml``), and copier renders from that repository: a
plugin's ``.copier-answers.yml`` names it (``_src_path``) and the version (``_commit``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import keyword
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dlguide import __version__
from dlguide._errors import DlguideError, UsageError, first_line

#: a template folder to render instead of the shipped one (template authors, tests)
TEMPLATE_ENV = "DLGUIDE_PLUGIN_TEMPLATE"
#: the git repository of template versions (default: $XDG_CACHE_HOME/dlguide/plugin-template)
CACHE_ENV = "DLGUIDE_TEMPLATE_CACHE"
ANSWERS = ".copier-answers.yml"
_MARKER = "dlguide-plugin-templates"  # in the cache's .git: the folder is ours to rewrite
# commits in the cache are dlguide's own: a fixed identity, and no signing a user's config may ask for
GIT = ("git", "-c", "user.name=dlguide", "-c", "user.email=dlguide@localhost", "-c", "commit.gpgsign=false",
       "-c", "tag.gpgsign=false")

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_DOMAIN = re.compile(r"^[a-z][a-z0-9_-]*$")  # as the registry's task names allow
_MODULE = re.compile(r"^[a-z][a-z0-9_]*$")  # the task's short name is also its module's name
_TAKEN_MODULES = ("plugin", "config")  # modules the template writes beside the task's


# -- names -------------------------------------------------------------------------------------
def check_names(name: str, domain: str | None = None, task: str | None = None) -> tuple[str | None, str | None]:
    """Validate the plugin name, domain and task given on the command line; returns the domain
    (taken from the task when only the task is given) and the task. Unset ones are left to the
    template's defaults (domain = name, task = <domain>.regress)."""
    if re.match(r"dlguide(?:[-_]|$)", name):
        raise UsageError(f"plugin name {name!r}: give the short name (e.g. tabular); the package is called "
                         "dlguide-<name>")
    if not _NAME.match(name):
        raise UsageError(f"invalid plugin name {name!r}; expected lower-case letters and digits, words joined "
                         "by - or _, starting with a letter (e.g. tabular)")
    if domain is not None and not _DOMAIN.match(domain):
        raise UsageError(f"invalid domain {domain!r}; expected lower-case letters, digits, - and _, starting "
                         "with a letter (e.g. tabular)")
    if task is not None:
        prefix, _, short = task.partition(".")
        example = f"{domain or name}.regress"
        if not _DOMAIN.match(prefix) or not _MODULE.match(short) or keyword.iskeyword(short):
            raise UsageError(f"invalid task {task!r}; expected <domain>.<name> (e.g. {example}), the name "
                             "lower-case letters, digits and _ (it names the task's Python module)")
        if short in _TAKEN_MODULES:
            raise UsageError(f"invalid task {task!r}: the package has a {short}.py of its own; choose another "
                             f"name (e.g. {example})")
        if domain is not None and prefix != domain:
            raise UsageError(f"task {task!r} is not in the domain {domain!r}; expected {domain}.<name>")
        domain = prefix
    return domain, task


def core_requirement(version: str = __version__) -> str:
    """The dlguide-core versions a new plugin asks for: this one's API line (``>=0.1,<0.2`` for
    0.1.x, since before 1.0 a minor release may break it; ``>=1.4,<2`` for 1.4.x)."""
    from packaging.version import Version

    current = Version(version)
    major, minor = (*current.release, 0)[:2]
    lower = f"{major}.{minor}" if Version(f"{major}.{minor}") <= current else str(current)  # a .dev build
    upper = f"0.{minor + 1}" if major == 0 else f"{major + 1}"
    return f">={lower},<{upper}"


# -- the template and its repository of versions ---------------------------------------------
def template_dir() -> Path:
    """The template to render: the shipped one, or the folder ``DLGUIDE_PLUGIN_TEMPLATE`` names."""
    folder = Path(os.environ.get(TEMPLATE_ENV) or Path(__file__).parent / "templates" / "plugin").expanduser()
    if not (folder / "copier.yml").is_file():
        raise UsageError(f"no plugin template in {folder} (it lacks copier.yml); check {TEMPLATE_ENV}")
    return folder


def template_version(template: Path) -> str:
    """The template's ``_template_version`` (a PEP 440 version: copier orders versions by it)."""
    import yaml  # here, not at import: building the CLI's parser imports this module
    from packaging.version import InvalidVersion, Version

    config = yaml.safe_load((template / "copier.yml").read_text(encoding="utf-8")) or {}
    value = str(config.get("_template_version", ""))
    try:
        Version(value)
    except InvalidVersion:
        raise DlguideError(f"{template / 'copier.yml'}: _template_version {value!r} is not a PEP 440 version "
                           "such as 1.2.0") from None
    return value


def cache_dir() -> Path:
    """Where the git repository of template versions lives."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dlguide" / "plugin-template"


def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*GIT, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        said = done.stderr.strip().splitlines() or [f"exit code {done.returncode}"]
        raise DlguideError(f"git {' '.join(args)} failed in {cwd}: {said[0]}")
    return done


def _tags(repo: Path) -> list[str]:
    return _git("tag", "--list", cwd=repo).stdout.split()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an OS lock on ``path``: two commands recording the template at once take turns."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def record_template(template: Path, cache: Path) -> str:
    """Commit ``template`` to the ``cache`` repository and tag it with its version, unless that
    version is there already; returns the version. The repository is left clean, since copier
    renders a local repository's uncommitted changes too."""
    version = template_version(template)
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / ".git" / _MARKER).is_file() and any(cache.iterdir()):
        # its working tree is rewritten below: never someone else's folder
        raise UsageError(f"{cache} is not empty and not dlguide's repository of plugin templates: point {CACHE_ENV} "
                         "at a new folder")
    with _locked(cache.parent / f".{cache.name}.lock"):
        if not (cache / ".git" / _MARKER).is_file():
            _git("-c", "init.defaultBranch=main", "init", "-q", cwd=cache)
            (cache / ".git" / _MARKER).write_text("plugin template versions, one tag each (dlguide plugin new)\n")
        for entry in cache.iterdir():  # the working tree becomes a copy of the template
            if entry.name == ".git":
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        shutil.copytree(template, cache, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _git("add", "-A", cwd=cache)
        if version in _tags(cache):
            same = _git("diff", "--cached", "--quiet", version, cwd=cache, check=False).returncode == 0
            _git("reset", "-q", "--hard", cwd=cache)
            if not same:  # a version names one content forever: plugins made from it depend on that
                raise DlguideError(f"the plugin template in {template} differs from its version {version} recorded "
                                   f"in {cache}: give the changed template a new _template_version in copier.yml")
            return version
        # --allow-empty: each version gets its own commit, so a tag names one version only
        _git("commit", "-q", "--allow-empty", "-m", f"plugin template {version}", cwd=cache)
        _git("tag", version, cwd=cache)
    return version


def _source(cache: Path) -> str:
    """The cache as ``_src_path`` records it: from ``~`` when it is under the home folder, so the
    answers file holds no user name and fits the same cache on another machine."""
    try:
        return "~/" + cache.resolve().relative_to(Path.home().resolve()).as_posix()
    except ValueError:
        return cache.resolve().as_posix()


# -- copier ------------------------------------------------------------------------------------
def _require_copier(command: str) -> Any:
    try:
        import copier
    except ImportError:
        raise UsageError(f"dlguide plugin {command} needs copier: pip install 'dlguide-core[plugin]'") from None
    if shutil.which("git") is None:
        raise UsageError(f"dlguide plugin {command} needs git (copier keeps template versions in git): install it")
    return copier


@contextlib.contextmanager
def _copier_errors() -> Iterator[None]:
    """copier's errors (a rejected answer, a failed merge) as one line."""
    from copier.errors import CopierError

    try:
        yield
    except KeyboardInterrupt:  # copier's interrupted prompt is one too: dlguide reports it as such
        raise
    except CopierError as exc:
        raise DlguideError(f"copier: {first_line(exc)}") from exc


def read_answers(folder: Path) -> dict[str, Any]:
    """The plugin's ``.copier-answers.yml``, checked to name a template version."""
    import yaml

    path = folder / ANSWERS
    if not path.is_file():
        raise UsageError(f"{folder} has no {ANSWERS}: it was not made by 'dlguide plugin new' (or the file was "
                         "removed); give the plugin's folder")
    try:
        answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {first_line(exc)}") from None
    if not isinstance(answers, dict) or not answers.get("_commit") or not answers.get("_src_path"):
        raise UsageError(f"{path} does not name the template version it was made from (_commit, _src_path)")
    return answers


def new_plugin(name: str, *, domain: str | None = None, task: str | None = None, out: str | Path | None = None,
               interactive: bool = False) -> Path:
    """Render a plugin package into ``out`` (default ``./dlguide-<name>``); returns the folder."""
    domain, task = check_names(name, domain, task)
    dest = Path(out) if out is not None else Path(f"dlguide-{name}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty folder; give --out a new or empty folder")
    copier = _require_copier("new")
    cache = cache_dir()
    version = record_template(template_dir(), cache)
    data = {"name": name, "dlguide_requirement": core_requirement()}
    data.update({k: v for k, v in (("domain", domain), ("task", task)) if v is not None})
    with _copier_errors():
        copier.run_copy(_source(cache), dest, data=data, vcs_ref=version, defaults=not interactive, quiet=True,
                        unsafe=False)
    return dest


def check_clean_git(folder: Path) -> None:
    """copier's update merges through git: the plugin must be in a repository, with nothing uncommitted."""
    if _git("rev-parse", "--show-toplevel", cwd=folder, check=False).returncode != 0:
        raise UsageError(f"{folder} is not in a git repository, which the update merges through: run git init, "
                         "git add -A and git commit in it first")
    changed = _git("status", "--porcelain", "--", ".", cwd=folder).stdout.splitlines()
    if changed:
        files = f"{len(changed)} file" + ("s" if len(changed) > 1 else "")
        raise UsageError(f"{folder} has uncommitted changes ({files}): commit or stash them first, "
                         "so that the update is one diff to review")


def update_plugin(path: str | Path = ".", *, interactive: bool = False) -> tuple[str, str, list[str]]:
    """Merge the current template into the plugin in ``path``; returns the template version it
    was made from, the version it now has, and the files left with conflict markers."""
    from packaging.version import Version

    folder = Path(path)
    if not folder.is_dir():
        raise UsageError(f"plugin folder not found: {folder}")
    answers = read_answers(folder)
    copier = _require_copier("update")
    check_clean_git(folder)
    cache = cache_dir()
    old, source = str(answers["_commit"]), str(answers["_src_path"])
    if Path(source).expanduser().resolve() != cache.resolve():
        raise UsageError(f"{folder} was made from the template repository {source}, not this dlguide's {cache}: "
                         f"set {CACHE_ENV}={source}, or write '_src_path: {_source(cache)}' in {ANSWERS} and commit")
    version = record_template(template_dir(), cache)
    if old not in _tags(cache):
        requirement = answers.get("dlguide_requirement", "")
        raise DlguideError(f"template version {old}, which made {folder}, is not in {cache}: run 'dlguide plugin "
                           f"update' once with the dlguide-core{requirement} that shipped it (that records it), "
                           "then again with this one")
    if Version(old) > Version(version):
        raise UsageError(f"{folder} was made by template {old}, newer than this dlguide's {version}: upgrade "
                         "dlguide-core")
    with _copier_errors():
        copier.run_update(folder, data={"dlguide_requirement": core_requirement()}, vcs_ref=version,
                          defaults=not interactive, overwrite=True, skip_answered=True, quiet=True, unsafe=False,
                          conflict="inline")
    return old, version, _conflicted(folder)


def _conflicted(folder: Path) -> list[str]:
    """Changed files holding the conflict markers of a change both the author and the template made."""
    found = []
    top = Path(_git("rev-parse", "--show-toplevel", cwd=folder).stdout.strip())
    for line in _git("status", "--porcelain", "-uall", "--", ".", cwd=folder).stdout.splitlines():
        file = top / line[3:].strip('"')
        with contextlib.suppress(OSError, UnicodeDecodeError):
            if any(row.startswith("<<<<<<< ") for row in file.read_text(encoding="utf-8").splitlines()):
                found.append(str(file.relative_to(folder.resolve())))
    return sorted(found)


# -- the command line --------------------------------------------------------------------------
def _interactive(args: argparse.Namespace) -> bool:
    return not args.no_input and sys.stdin.isatty()


def cmd_new(args: argparse.Namespace) -> int:
    dest = new_plugin(args.name, domain=args.domain, task=args.task, out=args.out, interactive=_interactive(args))
    answers = read_answers(dest)
    print(f"created dlguide-{answers['name']} in {dest}: task {answers['task']}, template {answers['_commit']}")
    print(f"next: cd {dest}\n"
          "      git init -q && git add -A && git commit -qm 'dlguide plugin new'   # dlguide plugin update needs it\n"
          "      python -m pip install -e '.[test]' && python -m pytest -q")
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    old, new, conflicts = update_plugin(args.path, interactive=_interactive(args))
    change = f"from template {old} to {new}" if old != new else f"at template {new} (no newer version)"
    print(f"updated {Path(args.path).resolve()} {change}; review with git diff, then commit")
    if conflicts:  # as git merge does: the merge is written, the conflicts are the author's to resolve
        print(f"dlguide: conflicts to resolve in {', '.join(conflicts)} (between <<<<<<< and >>>>>>>)",
              file=sys.stderr)
        return 1
    return 0


def add_scaffold_commands(plugin_sub: Any) -> None:
    """Add ``new`` and ``update`` to the ``dlguide plugin`` command group."""
    p = plugin_sub.add_parser("new", help="a new plugin package from dlguide's template (copier)")
    p.add_argument("name", metavar="NAME", help="short name: NAME=tabular makes dlguide-tabular, import "
                   "dlguide_tabular")
    p.add_argument("--domain", metavar="D", help="domain of the task names (default: NAME)")
    p.add_argument("--task", metavar="D.T", help="the first task's name (default: <domain>.regress)")
    p.add_argument("--out", metavar="DIR", help="the new package's folder, new or empty (default ./dlguide-NAME)")
    p.add_argument("--no-input", action="store_true", help="take the defaults without asking (also when stdin "
                   "is not a terminal)")
    p.set_defaults(handler=cmd_new)

    p = plugin_sub.add_parser("update", help="merge the current template's changes into a plugin made by "
                              "'plugin new', keeping your edits (needs a clean git working tree)")
    p.add_argument("path", metavar="PATH", nargs="?", default=".", help="the plugin's folder (default: here)")
    p.add_argument("--no-input", action="store_true", help="ask nothing; questions a newer template adds take "
                   "their defaults")
    p.set_defaults(handler=cmd_update)
