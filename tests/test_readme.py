"""Every command the README (and the docs' how-to pages) shows runs as written, as far as it can run
without its inputs: the README stays a landing page of at most ~250 lines, and each command -- the
lines of its ``bash`` blocks and the inline ``dipsim ...`` spans -- is dry-run: a ``dipsim`` command
line is parsed by dipsim's own parser (plugins it names loaded first), the repository files it names
must exist, and an experiment it sweeps must load; ``python3 tasks.py TASK`` must be a task;
``python benchmarks/X.py`` must exist. A command of another kind fails the test, so none goes
unchecked."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, ROOT / "docs/getting-started.md", *sorted((ROOT / "docs/how-to").glob("*.md"))]
MAX_README_LINES = 250
#: tasks.py's tasks, as its own error message lists them (one home: tasks.py)
TASKS = tuple(re.search(r"choose one of: ([\w, ]+)", (ROOT / "tasks.py").read_text()).group(1).split(", "))
#: what a line may start with besides the checked kinds: setting up a shell, not a dipsim command
SHELL = ("source ", "cd ", "export ", "pip ", "apt-get ", "sudo ", "mkdocs ", "git ")
_FILE = re.compile(r"^(experiments|examples|benchmarks|notebooks|hardware_profiles|docs)/[\w./-]+$")


@pytest.fixture(autouse=True)
def _no_plugins_left():
    """The commands shown load example plugins (``--plugin``, an experiment's ``plugins:``): unload them."""
    from simulator import plugins

    before = {p.spec for p in plugins.plugins()}
    yield
    for p in plugins.plugins():
        if p.spec not in before:
            plugins.unload(p)


def commands(path: Path) -> list[tuple[str, bool]]:
    """The commands of a Markdown file, each with whether it is a whole command line: each line of a
    ``bash`` block (comments and ``\\`` continuations joined; whole), and each inline code span that
    starts with ``dipsim `` or ``python3 tasks.py`` (prose often names a verb with a few options)."""
    text = path.read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                out.append((" ".join(line.split()), True))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    out += [(" ".join(m.split()), False) for m in re.findall(r"`((?:dipsim|python3 tasks\.py) [^`]+)`", prose)]
    return out


def _placeholders(argv: list[str]) -> list[str]:
    """``[NAME]`` and ``[--scheduler ADDR]`` are optional parts: leave them out."""
    out, depth = [], 0
    for a in argv:
        depth += a.count("[") * a.startswith("[")
        if depth == 0:
            out.append(a)
        depth -= a.count("]") * (depth > 0 and a.endswith("]"))
    return out


def dry_run_dipsim(argv: list[str], where: str, whole: bool = True) -> None:
    """Parse a dipsim command line (``whole``), or check that a verb named in prose has the options
    it is shown with."""
    from simulator import plugins
    from simulator.cli import build_parser
    from simulator.cli.options import plugin_specs

    plugins.load(plugin_specs(argv), where=f"{where}: --plugin")
    if not whole:
        verbs = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
        assert argv and argv[0] in verbs, f"{where}: dipsim {shlex.join(argv)}: no such verb"
        known = verbs[argv[0]]._option_string_actions
        for a in argv[1:]:
            assert not a.startswith("--") or a.split("=")[0] in known, f"{where}: dipsim {argv[0]} has no option {a}"
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{where}: dipsim {shlex.join(argv)}: refused by the parser (exit {e.code})", pytrace=False)
    assert args.command, where
    for a in argv:
        if _FILE.match(a):
            assert (ROOT / a).exists(), f"{where}: names {a}, which does not exist"
    if args.command == "sweep":
        from simulator.sweep import load_experiment

        load_experiment(ROOT / args.experiment, check_traces=False)


def dry_run(line: str, where: str, whole: bool = True) -> None:
    argv = _placeholders(shlex.split(line))
    if argv[0] == "dipsim" or argv[0].endswith("/dipsim"):
        dry_run_dipsim(argv[1:], where, whole)
    elif argv[:2] == ["python3", "tasks.py"]:
        assert len(argv) > 2 and argv[2] in TASKS, f"{where}: {line}: tasks.py has no such task (tasks: {TASKS})"
    elif argv[0].endswith("python") and len(argv) > 1 and argv[1].startswith("benchmarks/"):
        assert (ROOT / argv[1]).is_file(), f"{where}: {line}: no such benchmark"
    elif argv[0].endswith("python") and argv[1:3] == ["-m", "pytest"]:
        assert all((ROOT / a.split("::")[0]).exists() for a in argv[3:] if a.startswith("tests/")), where
    elif "=" in argv[0] and argv[1:2] in (["pytest"], ["python"], ["dipsim"]):      # VAR=value command ...
        dry_run(shlex.join(argv[1:]), where, whole)
    elif not line.startswith(SHELL):
        pytest.fail(f"{where}: {line!r}: not a command this test knows how to check", pytrace=False)


def test_the_readme_is_a_landing_page():
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move sections into docs/ (at most {MAX_README_LINES})"
    for link in re.findall(r"\]\((docs/[^)#\s]+)", README.read_text(encoding="utf-8")):
        assert (ROOT / link).is_file(), f"README.md links to {link}, which does not exist"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_shown_runs_as_written(page: Path, monkeypatch):
    monkeypatch.chdir(ROOT)
    shown = commands(page)
    if page == README:
        assert {("python3 tasks.py demo", True), ("python3 tasks.py test", True)} <= set(shown)
    for line, whole in shown:
        dry_run(line, f"{page.relative_to(ROOT)}", whole)


def _blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_experiment_profile_and_python_block_is_valid(page: Path, tmp_path):
    """A YAML example is an experiment that loads (its points checked) or a device profile that loads;
    a Python example compiles."""
    from simulator.hardware import load_device
    from simulator.search import load_searches
    from simulator.sweep import load_experiment

    for i, text in enumerate(_blocks(page, "yaml")):
        f = tmp_path / f"example{i}.yaml"
        f.write_text(text)
        if "kind: device" in text:
            assert load_device(str(f)).name
        elif "search:" in text:      # a search's space, objectives and constraints, checked as optimize reads them
            assert any(v.search.dims for v in load_searches(f)), f"{page.name}: YAML example {i} searches nothing"
        else:
            assert load_experiment(f, check_traces=False).points, f"{page.name}: YAML example {i} has no points"
    for i, text in enumerate(_blocks(page, "python")):
        compile(text, f"{page.name}: Python example {i}", "exec")


def test_a_wrong_command_is_caught(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="refused by the parser"):
        dry_run("dipsim replay --trace t.safetensors --no-such-option 1", "x.md")
    with pytest.raises(AssertionError, match="does not exist"):
        dry_run("dipsim sweep experiments/no-such.yaml --out r", "x.md")
    with pytest.raises(AssertionError, match="no such task"):
        dry_run("python3 tasks.py deploy", "x.md")
    page = tmp_path / "p.md"
    page.write_text("Run `dipsim plot results/g --out g.png` then\n```bash\ndipsim trace --model m \\\n  --tokens 8  # c\n```\n")
    assert commands(page) == [("dipsim trace --model m --tokens 8", True), ("dipsim plot results/g --out g.png", False)]
    with pytest.raises(AssertionError, match="has no option --outt"):
        dry_run("dipsim plot results/g --outt g.png", "x.md", whole=False)
