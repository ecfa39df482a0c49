"""The documentation holds: README.md and docs/*.md link only to files and headings that
exist, and every ``python -m retina.<entry>`` command they quote names an entry point
whose overrides compose (parsed and composed with Hydra, never run)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType, ValueType
from omegaconf import OmegaConf

from conftest import ROOT, compose_config

DOCS = ROOT / "docs"
README_MAX_LINES = 250
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$")
# [text](target "title"), ![alt](target), [label]: target, <img src="...">, <a href="...">
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HTML_LINK = re.compile(r"<(?:a|img)\b[^>]*\b(?:href|src)=\"([^\"]+)\"", re.I)
INLINE_CODE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto:, ...
COMMAND = re.compile(r"\bpython3?\s+-m\s+retina\.([A-Za-z_][\w.]*)")
PLACEHOLDER = re.compile(r"<[^<>\n]*>")  # <run_dir>, <seed-0 run>: a value to fill in
SHELL_STOP = re.compile(r"^(\|\|?|&&?|;|[0-9]*[<>].*)$")  # pipes, lists, redirections
HYDRA_MAIN = re.compile(r"@hydra\.main\([^)]*config_name\s*=\s*[\"'](\w+)[\"']", re.S)
MAIN = re.compile(r"^(?:def main\b|from \S+ import (?:.*\W)?main\b)", re.M)


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    entry: str
    args: str  # the text after ``python -m retina.<entry>``, comments and continuations gone

    def where(self) -> str:
        return f"{shown(self.path)}:{self.line}"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# --- Markdown -------------------------------------------------------------------------


def split_fences(text: str) -> tuple[str, list[tuple[int, list[str]]]]:
    """The text with fenced code blocks blanked (line numbers kept), and each block as
    (line number of its first line, its lines)."""
    prose, blocks, block, start, fence = [], [], [], 0, None
    for number, line in enumerate(text.splitlines(), start=1):
        marker = FENCE.match(line)
        if fence is None and marker:
            fence, start, block = marker.group(1), number + 1, []
            prose.append("")
        elif fence is not None and marker and marker.group(1) == fence:
            blocks.append((start, block))
            fence = None
            prose.append("")
        elif fence is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def without_inline_code(prose: str) -> str:
    """Inline code spans blanked (newlines kept): links inside code are not links."""
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed
    (letters, digits, ``_``, ``-`` and spaces kept), spaces as hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ...)."""
    prose, _ = split_fences(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        heading = HEADING.match(line)
        if heading:
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def link_targets(path: Path, text: str) -> Iterator[tuple[int, str]]:
    """(line, target) of every link and image in a Markdown text, outside code."""
    prose, _ = split_fences(text)
    prose = without_inline_code(prose)
    for pattern in (INLINE_LINK, REFERENCE_LINK, HTML_LINK):
        for match in pattern.finditer(prose):
            yield prose.count("\n", 0, match.start()) + 1, match.group(1)


def link_problems(path: Path, text: str | None = None) -> list[str]:
    """Relative links of ``path`` that point at no file, or at no heading of it."""
    text = path.read_text(encoding="utf-8") if text is None else text
    problems = []
    for line, target in link_targets(path, text):
        if not target or SCHEME.match(target):
            continue  # http(s), mailto and other absolute URLs are not checked here
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
        where = f"{shown(path)}:{line}: [{target}]"
        if not resolved.exists():
            problems.append(f"{where}: no file {shown(resolved)}")
        elif anchor and resolved.suffix != ".md":
            problems.append(f"{where}: an anchor into a file that is not Markdown")
        elif anchor and anchor.lower() not in anchors(resolved):
            known = ", ".join(sorted(anchors(resolved)))
            problems.append(f"{where}: {shown(resolved)} has no heading #{anchor} ({known})")
    return problems


# --- Commands -------------------------------------------------------------------------


def strip_shell_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` that starts a word outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def shell_lines(lines: list[str], first: int) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of a code block: comments removed, ``\\`` continuations
    joined."""
    pending, start = "", first
    for number, line in enumerate(lines, start=first):
        code = strip_shell_comment(line).rstrip()
        if not pending:
            start = number
        if code.endswith("\\"):
            pending += code[:-1] + " "
            continue
        yield start, pending + code
        pending = ""
    if pending:
        yield start, pending


def commands_in(path: Path, text: str) -> Iterator[Command]:
    """Every ``python -m retina.<entry>`` in the code blocks and inline code of a text."""
    prose, blocks = split_fences(text)
    for first, lines in blocks:
        for number, line in shell_lines(lines, first):
            yield from commands_on(path, number, line)
    for match in INLINE_CODE.finditer(prose):
        if "\n\n" in match.group(2):
            continue  # not a code span: an unmatched backtick across paragraphs
        number = prose.count("\n", 0, match.start()) + 1
        code = strip_shell_comment(" ".join(match.group(2).split()))
        yield from commands_on(path, number, code)


def commands_on(path: Path, number: int, line: str) -> Iterator[Command]:
    found = list(COMMAND.finditer(line))
    ends = [match.start() for match in found[1:]] + [len(line)]
    for match, end in zip(found, ends[: len(found)], strict=True):
        yield Command(path, number, match.group(1), line[match.end() : end])


def override_tokens(args: str) -> list[str]:
    """The ``key=value``, ``group=option``, ``+key=value`` and ``~key`` arguments of a
    command line, up to its first pipe, list operator or redirection; flags (``-m``,
    ``--help``, ``--cfg job``), placeholders' ``...`` and bracketed usage such as
    ``[key=value ...]`` are not overrides."""
    lexer = shlex.shlex(PLACEHOLDER.sub("PLACEHOLDER", args), posix=True, punctuation_chars="|&;")
    lexer.whitespace_split = True
    lexer.commenters = ""
    tokens = []
    for token in lexer:
        if SHELL_STOP.match(token):
            break
        if token.startswith(("-", "[")) or token.endswith("]") and "=" not in token:
            continue
        if "=" in token or token.startswith("~"):
            tokens.append(token)
    return tokens


@cache
def entry_point(entry: str) -> tuple[Path, str | None]:
    """The module file of ``retina.<entry>`` and its Hydra config name (None for an
    argparse entry point); read, never imported."""
    module = ROOT / "retina" / (entry.replace(".", "/") + ".py")
    if not module.is_file():
        return module, None
    config = HYDRA_MAIN.search(module.read_text(encoding="utf-8"))
    return module, config.group(1) if config else None


ENUMERABLE = (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP, ValueType.RANGE_SWEEP)


def is_search_space(override: Override) -> bool:
    """A sweep whose values cannot be listed: ``interval(...)``, ``tag(log,interval(...))``
    (Optuna's search space), ``glob(...)``."""
    return override.is_sweep_override() and override.value_type not in ENUMERABLE


def variants(overrides: list[Override]) -> Iterator[list[str]]:
    """Single-run override lists that together cover a (multirun) command line: every
    override at its first value, then each further value of a choice sweep in turn.
    Range sweeps take their first value; search spaces (``interval(...)``) are left out here
    and their keys checked separately."""

    def first(override: Override) -> str:
        if not override.is_sweep_override():
            return override.input_line
        return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"

    plain = [o for o in overrides if not is_search_space(o)]
    base = [first(o) for o in plain]
    yield base
    for index, override in enumerate(plain):
        if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
            for value in list(override.sweep_string_iterator())[1:]:
                yield [*base[:index], f"{override.get_key_element()}={value}", *base[index + 1 :]]


@cache
def composed(config_name: str, overrides: tuple[str, ...]):
    return compose_config(config_name, list(overrides))


def command_problems(command: Command) -> list[str]:
    """What is wrong with one quoted command: an entry point that does not exist, an
    override that does not parse, or overrides that do not compose."""
    where = f"{command.where()}: python -m retina.{command.entry}{command.args.rstrip()}"
    module, config_name = entry_point(command.entry)
    if not module.is_file():
        return [f"{where}: no entry point {shown(module)}"]
    if not MAIN.search(module.read_text(encoding="utf-8")):
        return [f"{where}: {shown(module)} has no main"]
    if config_name is None:
        return []  # an argparse entry point: its arguments are not Hydra overrides
    parser = OverridesParser.create()
    try:
        overrides = parser.parse_overrides(override_tokens(command.args))
    except Exception as error:  # any parse failure is the doc's problem
        return [f"{where}: overrides do not parse: {error}"]
    problems, base = [], None
    for overrides_now in variants(overrides):
        try:
            cfg = composed(config_name, tuple(overrides_now))
        except Exception as error:  # Hydra raises several kinds
            message = " ".join(str(error).split())
            problems.append(f"{where}: {config_name}.yaml with {overrides_now}: {message}")
            if base is None:
                return problems  # every other variant shares what failed
            continue
        base = cfg if base is None else base
    for space in filter(is_search_space, overrides):  # the key must exist
        key = space.key_or_group
        if space.type == OverrideType.CHANGE and not key.startswith("hydra."):
            if OmegaConf.select(base, key, default=KeyError) is KeyError:
                problems.append(f"{where}: {config_name}.yaml has no key {key}")
    return problems


def all_commands() -> list[Command]:
    return [c for path in doc_files() for c in commands_in(path, path.read_text("utf-8"))]


# --- Tests ----------------------------------------------------------------------------


def test_every_relative_link_resolves():
    problems = [problem for path in doc_files() for problem in link_problems(path)]
    assert not problems, "Broken links:\n" + "\n".join(problems)


def test_every_quoted_command_names_an_entry_point_and_composes():
    commands = all_commands()
    assert len(commands) > 20, "the command extraction found almost nothing"
    problems = [problem for command in commands for problem in command_problems(command)]
    assert not problems, "Commands that would not run:\n" + "\n".join(problems)


def test_the_checkers_report_bad_links_and_commands(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading, twice!\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#a-code-heading-twice) [gone](missing.md) [bad](other.md#nope)\n"
        "![figure](missing.png) [web](https://example.org/x.md) `[code](not-a-link.md)`\n\n"
        "```bash\n"
        "python -m retina.train debug=smoke   # fine\n"
        "python -m retina.train -m seed=0,1 \\\n"
        "    train.nonexistent_key=1\n"
        "python -m retina.train -m 'model.nonexistent=interval(0.0,0.5)'\n"
        "```\n\n"
        "Also `python -m retina.evaluate run_dir=<a run> split=val` (fine),\n"
        "`python -m retina.nosuchentry x=1` and `python -m retina.train model=nosuchmodel`.\n"
    )
    links = link_problems(page)
    assert [p.split(": ")[1] for p in links] == [
        "[missing.md]",
        "[other.md#nope]",
        "[missing.png]",
    ], links
    found = [(c.line, c.entry, command_problems(c)) for c in commands_in(page, page.read_text())]
    assert len(found) == 6, found
    bad = {(line, entry): problems for line, entry, problems in found if problems}
    assert sorted(bad) == [(8, "train"), (10, "train"), (14, "nosuchentry"), (14, "train")], bad
    assert all(len(problems) == 1 for problems in bad.values()), bad
    assert "page.md:8" in bad[8, "train"][0] and "train.nonexistent_key" in bad[8, "train"][0]
    assert "has no key model.nonexistent" in bad[10, "train"][0]
    assert "no entry point retina/nosuchentry.py" in bad[14, "nosuchentry"][0]
    assert "nosuchmodel" in bad[14, "train"][0]


def test_readme_is_short_and_maps_every_docs_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < README_MAX_LINES
    linked = {target.partition("#")[0] for _, target in link_targets(ROOT / "README.md", text)}
    missing = [page.name for page in sorted(DOCS.glob("*.md")) if f"docs/{page.name}" not in linked]
    assert not missing, f"README's documentation map does not link {missing}"


def test_every_docs_page_opens_with_a_title_and_what_it_covers():
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# "), f"{shown(page)} does not start with a # title"
        assert len(lines) > 2 and lines[1] == "" and lines[2].strip(), shown(page)


def test_help_lists_every_docs_page():
    help_file = ROOT / "retina" / "conf" / "hydra" / "help" / "retina.yaml"
    shown_help = yaml.safe_load(help_file.read_text(encoding="utf-8"))["footer"]
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in shown_help]
    assert not missing, f"--help does not list {missing}"
