"""The documentation site: built with warnings as errors, and what its pages show is run.

How a page's code blocks are treated (docs/index.md, "About these docs", says the same to readers):

- ```` ```console ````: each ``$ `` line is a command (a trailing backslash continues it); the
  lines after it are its output and are not compared, except a line ``dlguide: error: MESSAGE``
  right after a command: that command must then fail with MESSAGE on stderr (a trailing ``...``
  leaves the rest of the message out). ``$ dlguide ARGS`` runs through the CLI's entry point in
  this process, in the page's own temporary folder; every command must exit 0.
- ```` ```python ````: executed in the page's folder, in page order with the commands, with one
  namespace per page.
- a block with ``title="PATH"``: its text is written to PATH in the page's folder (the
  plugin tutorial's project files, a config file) before the blocks after it run.
- ``<!-- skip-test -->`` on the line before a block: not run (it downloads, needs a GPU, runs a
  server or takes long); its ``dlguide`` lines are still parsed by the command line's parser,
  so an option that does not exist fails.
- a page whose commands include ``pip install`` (the plugin tutorial) runs in a fresh virtual
  environment that sees this one's packages: ``pip install`` runs offline (``--no-deps
  --no-build-isolation --no-index``), and ``dlguide``, ``pytest`` and ``python`` run there,
  each in a process of its own (see ``DRIVER``), so the tutorial's plugin never enters the
  shared test environment.

Any other command in a tested block, and ``bash``/``sh``/``shell`` blocks (write ``console``),
fail the test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import inspect
import io
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SKIP_MARK = "<!-- skip-test -->"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
TITLE = re.compile(r'title="(?P<title>[^"]+)"')
RUNNABLE = {"console", "python"}
FORBIDDEN = {"bash", "sh", "shell", "shell-session"}


@dataclasses.dataclass
class Block:
    page: str
    line: int
    lang: str
    title: str | None
    text: str
    skip: bool

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"


@dataclasses.dataclass
class Command:
    argv: list[str]
    line: int
    expected_error: str | None = None


def read_blocks(page: str) -> list[Block]:
    """The fenced code blocks of a page, in order."""
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        lang = info.split()[0] if info and not info.startswith(("{", "title=")) else ""
        title = TITLE.search(info)
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body: list[str] = []
        start = i + 1
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1
        blocks.append(Block(page, start, lang, title["title"] if title else None, "\n".join(body) + "\n",
                            previous == SKIP_MARK))
    return blocks


def commands(block: Block) -> list[Command]:
    """The ``$`` lines of a console block, with the error a following ``dlguide: error:`` line expects."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if found and found[-1].expected_error is None and line.startswith("dlguide: error:") and \
                    lines[i - 1].startswith("$ "):
                found[-1].expected_error = line.removesuffix("...").strip()
            i += 1
            continue
        text, number = line[2:], block.line + i
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        found.append(Command(shlex.split(text, comments=True), number))
        i += 1
    return found


def pages() -> list[str]:
    return sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def installs(blocks: list[Block]) -> bool:
    return any(c.argv[:2] == ["pip", "install"] for b in blocks if b.lang == "console" and not b.skip
               for c in commands(b))


def runnable_pages() -> list[str]:
    return [p for p in pages() if any(b.lang in RUNNABLE and not b.skip for b in read_blocks(p))
            and not installs(read_blocks(p))]


# -- the site --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(ROOT / "mkdocs.yml"), "--site-dir", str(out)], check=False, capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=300)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout}\n{res.stderr}"
    return out


def test_site_builds_with_warnings_as_errors(site: Path) -> None:
    assert (site / "index.html").is_file()
    for page in pages():
        name = page.removesuffix(".md")
        built = site / ("index.html" if name == "index" else f"{name}/index.html")
        assert built.is_file(), f"docs/{page} was not built"


def test_every_method_a_task_may_implement_is_in_the_reference(site: Path) -> None:
    from dlguide import Task

    page = (site / "reference" / "task-api" / "index.html").read_text(encoding="utf-8")
    public = [name for name in vars(Task) if not name.startswith("_")]
    missing = [name for name in public if f'id="dlguide.Task.{name}"' not in page]
    assert not missing, f"Task members without a documented entry in the reference: {missing}"
    for name, member in vars(Task).items():
        if inspect.isfunction(member) and not name.startswith("_"):
            assert member.__doc__, f"Task.{name} has no docstring"


def test_every_hook_is_on_the_hooks_page(site: Path) -> None:
    from dlguide import hookspecs

    text = html.unescape(re.sub(r"<[^>]+>", "", (site / "hooks" / "index.html").read_text(encoding="utf-8")))
    for name in (n for n in vars(hookspecs) if n.startswith("dlguide_")):
        assert f"{name}(" in text, f"{name} is not documented on the hooks page"


# -- the pages' conventions ------------------------------------------------------------------

def test_code_blocks_follow_the_conventions() -> None:
    problems: list[str] = []
    for page in pages():
        for block in read_blocks(page):
            if block.lang in FORBIDDEN:
                problems.append(f"{block.where}: a ```{block.lang} block; write ```console with '$ ' prompts")
            if block.lang == "console" and not commands(block):
                problems.append(f"{block.where}: a console block without a '$ ' command")
            if block.lang == "console" and not block.skip and not installs(read_blocks(page)):
                for cmd in commands(block):
                    if cmd.argv[:1] != ["dlguide"]:
                        problems.append(f"docs/{page}:{cmd.line}: '{cmd.argv[0]}' cannot run here: only "
                                        f"dlguide commands do; put the block after {SKIP_MARK}")
                    elif cmd.argv[1:2] == ["serve"]:
                        problems.append(f"docs/{page}:{cmd.line}: dlguide serve does not return; mark it "
                                        f"{SKIP_MARK}")
    assert not problems, "\n".join(problems)


def test_skipped_dlguide_commands_parse() -> None:
    """A skipped block is not run, but its options must exist: the parser reads each line."""
    from dlguide import DlguideError
    from dlguide._cli import build_parser
    from dlguide._plugins import get_runtime

    parser = build_parser(get_runtime())
    problems: list[str] = []
    for page in pages():
        for block in read_blocks(page):
            if block.lang != "console" or not block.skip:
                continue
            for cmd in commands(block):
                if cmd.argv[:1] != ["dlguide"]:
                    continue
                try:
                    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                        parser.parse_args(cmd.argv[1:])
                except (DlguideError, SystemExit) as exc:  # argparse's own exit, for --help
                    problems.append(f"docs/{page}:{cmd.line}: {shlex.join(cmd.argv)}: {exc}")
    assert not problems, "\n".join(problems)


# -- running the pages -----------------------------------------------------------------------

@pytest.fixture
def page_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh folder per page; a cache (MONAI's synthetic volumes) kept out of the user's home."""
    import torch

    cache = tmp_path_factory.getbasetemp() / "docs-cache"
    cache.mkdir(exist_ok=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for name in ("DLGUIDE_STRICT_PLUGINS", "DLGUIDE_DISABLE_PLUGINS", "DLGUIDE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    # one compute thread per process: the commands are tiny, and spinning threads on a busy
    # machine cost far more than they give (processes the commands start inherit it)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    try:
        yield work
    finally:
        torch.set_num_threads(threads)


def write_file(block: Block, folder: Path) -> None:
    assert block.title is not None
    path = folder / block.title
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text, encoding="utf-8")


def run_in_process(cmd: Command, capfd: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from dlguide._cli import main

    capfd.readouterr()
    try:
        code = main(cmd.argv[1:])
    except SystemExit as exc:  # --version, --help
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def check_outcome(page: str, cmd: Command, code: int, out: str, err: str) -> None:
    where = f"docs/{page}:{cmd.line}: $ {shlex.join(cmd.argv)}"
    if cmd.expected_error is not None:
        assert code != 0, f"{where} was shown failing but exited 0:\n{out[-2000:]}"
        assert cmd.expected_error in err, f"{where}: expected '{cmd.expected_error}' on stderr, got:\n{err[-2000:]}"
    else:
        assert code == 0, f"{where} exited {code}:\n{out[-3000:]}\n{err[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("page", runnable_pages())
def test_page_runs(page: str, page_env: Path, capfd: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "__docs__"}
    started = time.perf_counter()
    for block in read_blocks(page):
        if block.skip:
            continue
        if block.title is not None:
            write_file(block, page_env)
        elif block.lang == "python":
            exec(compile(block.text, block.where, "exec"), namespace)  # noqa: S102 - the docs' own code
        elif block.lang == "console":
            for cmd in commands(block):
                check_outcome(page, cmd, *run_in_process(cmd, capfd))
    print(f"docs/{page}: {time.perf_counter() - started:.1f} s")


# -- the plugin tutorial, in a virtual environment of its own ---------------------------------

def make_venv(folder: Path) -> Path:
    """A fresh venv that also sees this environment's packages (and their editable installs)."""
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(folder)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # this test environment is itself a venv: --system-site-packages reaches the interpreter's base
    # installation, not it, so its site-packages (with their .pth files) are added after the venv's own
    ours = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    lines = [f"import site; site.addsitedir({p!r})" for p in ours]
    Path(purelib, "_docs_test_parent_env.pth").write_text("\n".join(lines) + "\n")
    return python


# The tutorial's dlguide and pytest commands each run in a new process, forked from one that has
# imported what every such process imports first (torch, the Trainer): the child loads the
# installed plugins from the entry points as a new shell command would, and sees the files as
# they are now, without paying torch's import for every command. The driver starts after the
# last ``pip install``, whose .pth files put the editable project on the path at start-up.
DRIVER = """
import json, os, sys, traceback
import dlguide._cli, dlguide._runs, dlguide._trainer, dlguide._inference, pytest, torchmetrics
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(request["cwd"])
            for fd, path in ((1, request["out"]), (2, request["err"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            if request["tool"] == "pytest":
                sys.argv = ["pytest", *request["argv"]]
                code = int(pytest.main(["-p", "no:cacheprovider", *request["argv"]]))
            else:
                sys.argv = ["dlguide", *request["argv"]]
                code = dlguide._cli.main(request["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class ForkingRunner:
    """``dlguide ARGS`` and ``pytest ARGS`` in the venv, one forked process per command (see DRIVER)."""

    def __init__(self, python: Path, env: dict[str, str], cwd: Path, scratch: Path) -> None:
        self.python, self.env, self.cwd, self.scratch = python, env, cwd, scratch
        self.process: subprocess.Popen[str] | None = None

    def run(self, tool: str, argv: list[str]) -> tuple[int, str, str]:
        if self.process is None:
            self.process = subprocess.Popen([str(self.python), "-c", DRIVER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, env=self.env, cwd=self.cwd)
        out, err = self.scratch / "stdout.txt", self.scratch / "stderr.txt"
        request = {"tool": tool, "argv": argv, "cwd": str(self.cwd), "out": str(out), "err": str(err)}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the dlguide driver died (exit code {self.process.wait()})"
        return json.loads(answer)["code"], out.read_text(), err.read_text()

    def close(self) -> None:
        if self.process is not None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=60)
            self.process = None


def venv_argv(python: Path, argv: list[str]) -> list[str]:
    tool, rest = argv[0], argv[1:]
    if tool == "pip":
        offline = ["--no-deps", "--no-build-isolation", "--no-index"] if rest[:1] == ["install"] else []
        return [str(python), "-m", "pip", "-q", *rest[:1], *offline, *rest[1:]]
    if tool == "python":
        return [str(python), *rest]
    raise AssertionError(f"'{tool}' cannot run in the tutorial's test: only pip, dlguide, pytest and python do")


def tutorial_pages() -> list[str]:
    return [p for p in pages() if installs(read_blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", tutorial_pages())
def test_tutorial_works_in_a_fresh_venv(page: str, tmp_path: Path) -> None:
    python = make_venv(tmp_path / "venv")
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DLGUIDE_", "PYTEST_", "PYTHONPATH", "VIRTUAL_ENV"))}
    # the tutorial's pytest keeps its temporary folders here: in the shared root, its new sessions
    # would retire the oldest ones there, this suite's own among them, while its tests still use them
    (tmp_path / "temproot").mkdir()
    env.update(PYTEST_DEBUG_TEMPROOT=str(tmp_path / "temproot"))
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               PATH=f"{python.parent}{os.pathsep}{env.get('PATH', '')}", PIP_DISABLE_PIP_VERSION_CHECK="1")
    forked = ForkingRunner(python, env, project, tmp_path)
    started = time.perf_counter()
    try:
        for block in read_blocks(page):
            if block.skip:
                continue
            if block.title is not None:
                write_file(block, project)
            elif block.lang == "python":
                res = subprocess.run([str(python), "-c", block.text], check=False, cwd=project, env=env,
                                     capture_output=True, text=True, timeout=600)
                assert res.returncode == 0, f"{block.where}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            elif block.lang == "console":
                for cmd in commands(block):
                    if cmd.argv[0] in ("dlguide", "pytest"):
                        outcome = forked.run(cmd.argv[0], cmd.argv[1:])
                    else:
                        if cmd.argv[0] == "pip":
                            forked.close()  # the next command starts with what pip installed
                        res = subprocess.run(venv_argv(python, cmd.argv), check=False, cwd=project, env=env,
                                             capture_output=True, text=True, timeout=600)
                        outcome = res.returncode, res.stdout, res.stderr
                    check_outcome(page, cmd, *outcome)
    finally:
        forked.close()
    import importlib.util

    for package in (project / "src").glob("*/__init__.py"):  # installed in the venv only, never here
        assert importlib.util.find_spec(package.parent.name) is None, f"{package.parent.name} leaked"
    print(f"docs/{page}: {time.perf_counter() - started:.1f} s")
