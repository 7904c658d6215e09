"""Hostile and broken YAML: every input gives a clean CampaignError in bounded time and memory.

Campaign files are written by people and reach us through git, uploads and the CLI, so the loader
must hold against anything: a billion laughs, 100k nested brackets, a 10 MB file, binary junk,
duplicate keys, Python tags. A clean error is a CampaignError whose problem names the file, the
line and column, and says in plain words what is wrong; never a traceback, never a hang.

Each case is checked twice: through ``load_yaml`` (the exact problem), and through
``load_workspace`` with the content in ``campaigns/welcome.yaml`` (the problem is reported with the
workspace-relative file name, and the other files' problems are still reported next to it).

Time and memory are bounded structurally, not by the clock (tests never assert wall-clock time):
the worst inputs run in a subprocess capped at 512 MB of address space and a low recursion limit.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from campaigns import (
    CampaignError,
    CampaignSchemaError,
    CampaignSyntaxError,
    load_workspace,
    loader,
)
from campaigns.loader import MAX_FILE_BYTES, load_model, load_yaml
from campaigns.schema import Campaign
from tests.support import ROOT, copy_workspace

WELCOME = "acme/campaigns/welcome.yaml"
MB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    """Hostile content and the one problem it must give: ``line:col: [path: ]message``.

    Content is made on demand, so 10 MB inputs do not sit in memory during collection."""

    id: str
    make: Callable[[], bytes]
    expected: str


def text(value: str) -> Callable[[], bytes]:
    return lambda: value.encode()


def raw(value: bytes) -> Callable[[], bytes]:
    return lambda: value


def billion_laughs() -> bytes:
    """Nine levels of nine aliases: 10^9 "lol"s if anything ever expanded them."""
    lines = ['lol0: &a0 "lol"']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"lol{level}: &a{level} [{refs}]")
    return ("\n".join(lines) + "\n").encode()


def nested_blocks(levels: int, item: Callable[[int], str]) -> Callable[[], bytes]:
    return lambda: "".join(" " * i + item(i) for i in range(levels)).encode()


DEEP_KEYS = ".".join(["k"] * 32)
DEEP_ITEMS = ".".join(["0"] * 33)

# The loader refuses these while reading: CampaignSyntaxError, one problem.
SYNTAX = [
    # anchors and aliases: refused at the first anchor, before anything could be expanded
    Case("billion-laughs", billion_laughs, "1:7: lol0: YAML anchors and aliases are not allowed"),
    Case("alias-only", text("a: *nowhere\n"), "1:4: a: YAML anchors and aliases are not allowed"),
    Case(
        # the refusal comes before the rest of the file is even parsed
        "anchor-then-garbage",
        text("a: &x [1]\nb: [unclosed\n"),
        "1:4: a: YAML anchors and aliases are not allowed",
    ),
    Case(
        "anchor-on-null",  # ruamel drops the anchor of an empty value after construction
        text("a: &x\nb: *x\n"),
        "1:4: a: YAML anchors and aliases are not allowed",
    ),
    Case(
        "merge-key-alias",
        text("base: &b {x: 1}\nc:\n  <<: *b\n"),
        "1:7: base: YAML anchors and aliases are not allowed",
    ),
    Case(
        "merge-key-inline",
        text("c:\n  <<: {x: 1}\n"),
        "2:3: c: YAML merge keys (<<) are not allowed",
    ),
    # deep nesting: stopped at level 33, long before Python's recursion limit
    Case("100k-[", text("a: " + "[" * 100_000), "1:36: YAML is nested more than 32 levels deep"),
    Case("100k-{", text("a: " + "{" * 100_000), "1:36: YAML is nested more than 32 levels deep"),
    Case(
        "100k-[]-closed",
        text("a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
        "1:36: YAML is nested more than 32 levels deep",
    ),
    Case(
        "50k-[{-mixed",
        text("a: " + "[{k: " * 50_000),
        "1:84: YAML is nested more than 32 levels deep",
    ),
    Case(
        "1000-block-mappings",
        nested_blocks(1000, lambda i: "k:\n"),
        f"33:33: {DEEP_KEYS}: YAML is nested more than 32 levels deep",
    ),
    Case(
        "1000-block-sequences",
        nested_blocks(1000, lambda i: "-\n"),
        f"34:34: {DEEP_ITEMS}: YAML is nested more than 32 levels deep",
    ),
    # size: refused before decoding or parsing; only MAX_FILE_BYTES + 1 bytes are ever read
    Case(
        "10-MB",
        raw(b"a: 1\n" + b"#" * (10 * MB - 5)),
        f"1:1: file is {10 * MB} bytes; the limit is {MAX_FILE_BYTES}",
    ),
    Case(
        "one-byte-over",
        raw(b"#" * (MAX_FILE_BYTES + 1)),
        f"1:1: file is {MAX_FILE_BYTES + 1} bytes; the limit is {MAX_FILE_BYTES}",
    ),
    # binary and wrong encodings
    Case("latin-1", raw(b"id: x\nname: caf\xe9\n"), "2:10: file is not UTF-8 text"),
    Case("png", raw(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "1:1: file is not UTF-8 text"),
    Case("random-bytes", raw(random.Random(7).randbytes(4096)), "1:2: file is not UTF-8 text"),
    Case(
        "nul-bytes",
        raw(b"id: x\n\x00\x00\x00\n"),
        "2:1: YAML: character U+0000 is not allowed (special characters are not allowed)",
    ),
    Case(
        "utf-16-le-bom",
        raw(b"\xff\xfe" + "id: x\n".encode("utf-16-le")),
        "1:1: file is not UTF-8 text (it is UTF-16; save it as UTF-8)",
    ),
    Case(
        "utf-16-be-bom",
        raw(b"\xfe\xff" + "id: x\n".encode("utf-16-be")),
        "1:1: file is not UTF-8 text (it is UTF-16; save it as UTF-8)",
    ),
    Case(
        "utf-16-no-bom",  # valid UTF-8 full of NULs
        raw("id: x\n".encode("utf-16-le")),
        "1:2: YAML: character U+0000 is not allowed (special characters are not allowed)",
    ),
    # duplicate keys: pointed at the second occurrence
    Case(
        "duplicate-key",
        text("a: 1\nb: 2\na: 3\n"),
        "3:1: duplicate key 'a' (first written on line 1)",
    ),
    Case(
        "duplicate-nested",
        text("steps:\n  - id: x\n    id: y\n"),
        "3:5: steps.0: duplicate key 'id' (first written on line 2)",
    ),
    Case(
        "duplicate-number-and-text",  # keys are text as written: 1 and '1' are the same key
        text("1: a\n'1': b\n"),
        "2:1: duplicate key '1' (first written on line 1)",
    ),
    Case(
        "duplicate-long-key",
        text(f"{'k' * 100}: 1\n{'k' * 100}: 2\n"),
        f"2:1: duplicate key '{'k' * 37}...' (first written on line 1)",
    ),
    Case(
        "complex-key",
        text("? [a, b]\n: 1\n"),
        "1:3: a key must be plain text, not a list or mapping",
    ),
    # tags: never constructed, whatever they name
    *(
        Case(f"tag-{tag}", text(f"a: {tag} {value}\n"), f"1:4: a: YAML tag {tag} is not allowed")
        for tag, value in [
            ("!!python/object:os.system", "x"),
            ("!!python/object/apply:os.system", "['echo pwned']"),
            ("!!python/name:os.system", "''"),
            ("!!binary", "aGVsbG8="),
            ("!!set", "{a, b}"),
            ("!!omap", "[a: 1, b: 2]"),
            ("!!timestamp", "2001-12-14"),
            ("!!int", "12"),
            ("!foo", "bar"),
            ("!foo", "{x: 1}"),
        ]
    ),
    Case(
        "tag-verbatim",
        text("a: !<tag:yaml.org,2002:python/object:os.system> x\n"),
        "1:4: a: YAML tag !<tag:yaml.org,2002:python/object:os.system> is not allowed",
    ),
    Case(
        "tag-directive",
        text("%TAG !e! tag:example.com,2000:\n---\na: !e!foo x\n"),
        "3:4: a: YAML tag !e!foo is not allowed",
    ),
    Case("str-tag-on-list", text("a: !!str [1]\n"), "1:4: a: YAML tag !!str is not allowed"),
    # documents and directives
    Case(
        "two-documents",
        text("a: 1\n---\nb: 2\n"),
        "2:1: YAML: expected a single document in the stream but found another document",
    ),
    Case(
        "yaml-1.1",  # would read `no` as false and 0777 as octal
        text("%YAML 1.1\n---\na: no\n"),
        "1:1: only YAML 1.2 is accepted; remove the '%YAML 1.1' line",
    ),
    # control characters: raw ones are refused by the reader, escaped ones by us
    Case(
        "raw-bell",
        raw(b"a: x\x07y\n"),
        "1:5: YAML: character U+0007 is not allowed (special characters are not allowed)",
    ),
    Case(
        "escaped-nul",
        text('a: "x\\0y"\n'),
        "1:4: a: control character U+0000 is not allowed in text",
    ),
    Case(
        "escaped-nul-x00",
        text('a: "x\\x00y"\n'),
        "1:4: a: control character U+0000 is not allowed in text",
    ),
    Case(
        "escaped-escape",
        text('a: "\\e[31mred"\n'),
        "1:4: a: control character U+001B is not allowed in text",
    ),
    Case(
        "escaped-crlf-header-injection",
        text('subject: "Hi\\r\\nBcc: all@example.com"\n'),
        "1:10: subject: control character U+000D is not allowed in text",
    ),
    Case(
        "escaped-c1",
        text('a: "\\x9b31m"\n'),
        "1:4: a: control character U+009B is not allowed in text",
    ),
    Case("nul-in-key", text('"k\\0": 1\n'), "1:1: control character U+0000 is not allowed in text"),
    Case(
        "crlf-raw-bell",  # positions count a CRLF as one line break
        raw(b"a: 1\r\nb: 2\r\nc: x\x07\r\n"),
        "3:5: YAML: character U+0007 is not allowed (special characters are not allowed)",
    ),
    Case(
        "crlf-duplicate",
        raw(b"a: 1\r\nb: 2\r\na: 3\r\n"),
        "3:1: duplicate key 'a' (first written on line 1)",
    ),
]

TOP_LEVEL = "expected keys and values (like 'id: ...') at the top of the file, found"

# Readable YAML that is no campaign: load_yaml gives data, load_model a schema problem at 1:1.
NOT_A_MAPPING = [
    Case("empty", raw(b""), f"1:1: {TOP_LEVEL} nothing"),
    Case("only-comments", text("# nothing here\n# at all\n"), f"1:1: {TOP_LEVEL} nothing"),
    Case("only-whitespace", text("\n\n   \n"), f"1:1: {TOP_LEVEL} nothing"),
    Case("document-marker", text("---\n...\n"), f"1:1: {TOP_LEVEL} nothing"),
    Case("top-level-scalar", text("hello\n"), f"1:1: {TOP_LEVEL} a single value"),
    Case("top-level-number", text("42\n"), f"1:1: {TOP_LEVEL} a single value"),
    Case("top-level-list", text("- id: welcome\n- id: other\n"), f"1:1: {TOP_LEVEL} a list"),
]


def nested_lists(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    return path


def problems_of(error: CampaignError) -> list[str]:
    return [str(p) for p in error.problems]


@pytest.mark.parametrize("case", SYNTAX, ids=[c.id for c in SYNTAX])
def test_load_yaml_refuses_cleanly(tmp_path: Path, case: Case) -> None:
    """The exact problem, with file, line and column: what the marketer sees."""
    with pytest.raises(CampaignSyntaxError) as info:
        load_yaml(write(tmp_path, case.make()), display="c.yaml")
    assert problems_of(info.value) == [f"c.yaml:{case.expected}"]


@pytest.mark.parametrize("case", NOT_A_MAPPING, ids=[c.id for c in NOT_A_MAPPING])
def test_a_file_that_is_no_mapping_is_a_schema_error_at_1_1(tmp_path: Path, case: Case) -> None:
    """Empty files and lone scalars are valid YAML; the schema refuses them without naming our
    classes (pydantic would say 'instance of Campaign')."""
    doc = load_yaml(write(tmp_path, case.make()), display="c.yaml")
    with pytest.raises(CampaignSchemaError) as info:
        load_model(doc, Campaign)
    assert problems_of(info.value) == [f"c.yaml:{case.expected}"]


def broken_workspace(tmp_path: Path, content: bytes) -> Path:
    """The demo workspace with ``content`` as the welcome campaign and a second, plainly broken
    campaign next to it, whose problem must still be reported."""
    root = copy_workspace(tmp_path)
    (root / "campaigns" / "welcome.yaml").write_bytes(content)
    (root / "campaigns" / "other.yaml").write_text("id: other\nname: Other\nbogus: 1\n")
    return root


@pytest.mark.parametrize("case", SYNTAX + NOT_A_MAPPING, ids=[c.id for c in SYNTAX + NOT_A_MAPPING])
def test_load_workspace_reports_the_file_and_goes_on(tmp_path: Path, case: Case) -> None:
    """``drip campaigns validate`` lists every problem of every file: one hostile file is one
    problem with its workspace-relative name, not a crash that hides the rest."""
    with pytest.raises(CampaignError) as info:
        load_workspace(broken_workspace(tmp_path, case.make()))
    reported = problems_of(info.value)
    assert [p for p in reported if p.startswith(WELCOME)] == [f"{WELCOME}:{case.expected}"]
    assert "acme/campaigns/other.yaml:3:1: bogus: unknown key 'bogus'" in "\n".join(reported)


def test_unsafe_tags_never_run_code(tmp_path: Path) -> None:
    """The tag is refused before construction: a file that would create a file does not."""
    target = tmp_path / "pwned"
    path = write(tmp_path, f"a: !!python/object/apply:builtins.open ['{target}', 'w']\n".encode())
    with pytest.raises(CampaignSyntaxError):
        load_yaml(path)
    assert not target.exists()


def test_too_many_nodes_is_refused_where_the_limit_is_crossed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counting happens while composing, so the work is bounded by MAX_NODES whatever follows.
    (The real limit, 50k, runs in the memory-capped subprocess below; here a small one keeps the
    test fast and the position exact: keys and values both count.)"""
    monkeypatch.setattr(loader, "MAX_NODES", 10)
    path = write(tmp_path, "".join(f"k{i}: {i}\n" for i in range(100)).encode())
    with pytest.raises(CampaignSyntaxError) as info:
        load_yaml(path, display="c.yaml")
    assert problems_of(info.value) == ["c.yaml:5:5: k4: the file has more than 10 keys and values"]


@pytest.mark.parametrize(
    ("content", "data"),
    [
        # a UTF-8 byte order mark (Windows Notepad) is fine
        (b"\xef\xbb\xbfa: 1\n", {"a": 1}),
        # exactly at the limit is allowed
        (b"a: 1\n" + b"#" * (MAX_FILE_BYTES - 5), {"a": 1}),
        # nesting up to MAX_DEPTH is allowed
        (
            ("a: " + "[" * 32 + "]" * 32).encode(),
            {"a": nested_lists(32)},
        ),
        # `!!str` is the one tag allowed: it keeps text as written
        (b"a: !!str 0777\n", {"a": "0777"}),
        # a quoted << is an ordinary key, not a merge
        (b"'<<': 1\n", {"<<": 1}),
        # tab and newline are the control characters text may hold
        (b'a: "x\\ty\\nz"\n', {"a": "x\ty\nz"}),
        # keys are text as written, never numbers, booleans or null
        (
            b"1: a\n0777: b\nno: c\n~: d\ntrue: e\n",
            {"1": "a", "0777": "b", "no": "c", "~": "d", "true": "e"},
        ),
    ],
    ids=[
        "utf-8-bom",
        "exactly-max-bytes",
        "32-levels",
        "str-tag",
        "quoted-merge",
        "tab-newline",
        "keys",
    ],
)
def test_acceptable_edge_cases_load(tmp_path: Path, content: bytes, data: object) -> None:
    assert load_yaml(write(tmp_path, content)).data == data


def test_a_non_specific_tag_is_typed_like_no_tag_and_never_crashes(tmp_path: Path) -> None:
    """``!`` asks the resolver for the type; a number too long for Python stays text there too."""
    content = f"a: ! {'9' * 5000}\nb: ! 2024-02-30\nc: ! 12\n".encode()
    assert load_yaml(write(tmp_path, content)).data == {"a": "9" * 5000, "b": "2024-02-30", "c": 12}


@pytest.mark.parametrize("kind", ["fifo", "directory", "dev-zero"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    """A FIFO named like a campaign would block the open forever, /dev/zero never ends."""
    path = tmp_path / "c.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(CampaignSyntaxError) as info:
        load_yaml(path, display="c.yaml")
    assert problems_of(info.value) == ["c.yaml:1:1: not a regular file"]


def test_a_900_kb_scalar_on_one_line_loads(tmp_path: Path) -> None:
    """Long lines are only long: bounded by the file size, no limit of their own."""
    doc = load_yaml(write(tmp_path, b"id: " + b"x" * 900_000 + b"\n"))
    assert doc.data == {"id": "x" * 900_000}


# What YAML 1.2 (ruamel round-trip, core schema) makes of YAML 1.1's traps, and so what the schema
# sees. The YAML 1.1 booleans stay text; numbers become plain ints and floats, not ruamel's
# formatting-keeping subclasses; dates stay text as written unless they are real dates (then
# ISO 8601); a number too long for Python stays text.
GOTCHAS: list[tuple[str, object]] = [
    ("no", "no"),
    ("on", "on"),
    ("yes", "yes"),
    ("off", "off"),
    ("y", "y"),
    ("true", True),
    ("false", False),
    ("0777", 777),  # YAML 1.2: decimal, leading zero ignored (1.1: octal 511)
    ("0o777", 511),
    ("0x1F", 31),
    ("1_000", 1000),
    ("1e3", 1000.0),
    (".5", 0.5),
    ("2001-12-14", "2001-12-14"),
    ("2001-12-14T21:59:43.10-05:00", "2001-12-14T21:59:43.100000-05:00"),
    ("2024-02-30", "2024-02-30"),  # no such day: text, for the schema to judge
    ("9" * 5000, "9" * 5000),  # beyond Python's int digit limit: text
    ("~", None),
    ("null", None),
    ("12:30", "12:30"),  # YAML 1.1 sexagesimal 750
]


@pytest.mark.parametrize(("written", "value"), GOTCHAS, ids=[g[0][:20] for g in GOTCHAS])
def test_yaml_1_1_gotchas_are_plain_values(tmp_path: Path, written: str, value: object) -> None:
    data = load_yaml(write(tmp_path, f"a: {written}\n".encode())).data
    assert data == {"a": value}
    assert type(data["a"]) is type(value)  # plain Python types, nothing of ruamel's


@pytest.mark.parametrize(
    ("written", "value"),
    [(".inf", float("inf")), ("-.inf", float("-inf")), (".nan", None)],
)
def test_infinity_and_nan_are_floats(tmp_path: Path, written: str, value: float | None) -> None:
    got = load_yaml(write(tmp_path, f"a: {written}\n".encode())).data["a"]
    assert type(got) is float
    assert got == value if value is not None else got != got


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("no", None),
        ("2001-12-14", None),
        ("0777", "expected text, found the number 777; put text in quotes to keep it as written"),
        ("1_000", "expected text, found the number 1000; put text in quotes to keep it as written"),
        (".inf", "expected text, found the number inf; put text in quotes to keep it as written"),
        (".nan", "expected text, found the number nan; put text in quotes to keep it as written"),
        ("true", "expected text, found true (yes/no); put text in quotes"),
        ("[a, b]", "expected text, found a list"),
        ("{a: b}", "expected text, found keys and values"),
    ],
)
def test_gotchas_in_a_campaign_are_values_or_clear_errors(
    tmp_path: Path, written: str, expected: str | None
) -> None:
    """Where text is expected, what YAML read instead is said in the author's terms."""
    old = "subject: Three trail tips our guides swear by"
    root = copy_workspace(tmp_path, {old: f"subject: {written}"})
    if expected is None:
        assert load_workspace(root).campaigns["welcome"]  # the text is a fine subject
        return
    with pytest.raises(CampaignError) as info:
        load_workspace(root)
    assert problems_of(info.value) == [
        f"{WELCOME}:26:16: steps.tips.send_email.subject: {expected}"
    ]


def test_windows_line_endings_keep_every_position(tmp_path: Path) -> None:
    """A CRLF file has the same lines and columns as its LF twin, in data and in errors."""
    lf = copy_workspace(tmp_path / "lf", {"timeout: 2d": "timeout: 2 dayz"})
    crlf = copy_workspace(tmp_path / "crlf", {"timeout: 2d": "timeout: 2 dayz"})
    welcome = crlf / "campaigns" / "welcome.yaml"
    welcome.write_bytes(welcome.read_bytes().replace(b"\n", b"\r\n"))
    assert b"\r\n" in welcome.read_bytes()

    a = load_yaml(lf / "campaigns" / "welcome.yaml")
    b = load_yaml(welcome)
    assert (a.data, a.positions, a.key_positions) == (b.data, b.positions, b.key_positions)
    errors = []
    for root in (lf, crlf):
        with pytest.raises(CampaignError) as info:
            load_workspace(root)
        errors.append(problems_of(info.value))
    assert errors[0] == errors[1]
    assert any(
        p.startswith(f"{WELCOME}:19:16: steps.wait_for_open.wait_for.timeout:") for p in errors[1]
    )


# Runs in a fresh interpreter with 512 MB of address space and a recursion limit of 200: the worst
# inputs must give their clean problem within both. The cap is checked to bite first. The timeout
# of subprocess.run only turns a hang into a failure instead of a stuck CI job.
CAPPED = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from campaigns.errors import CampaignError
    from campaigns.loader import load_yaml

    cap = 512 * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    try:
        bytearray(cap)
    except MemoryError:
        print("capped")
    sys.setrecursionlimit(200)
    for path in sorted(Path(sys.argv[1]).iterdir()):
        try:
            doc = load_yaml(path, display=path.name)
        except CampaignError as exc:
            print(*exc.problems, sep="\\n")
        else:
            print(path.name, "loaded", len(str(doc.data)))
    """
)


def test_worst_inputs_stay_within_memory_and_stack_limits(tmp_path: Path) -> None:
    cases = {
        "billion-laughs": billion_laughs(),
        "deep-aliases": (
            b"a0: &a0 [x, x]\n"
            + b"".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n".encode() for i in range(1, 60))
        ),
        "deep-flow": b"a: " + b"[" * (MAX_FILE_BYTES - 3),
        "deep-blocks": "".join(" " * i + "k:\n" for i in range(1400)).encode(),
        "10-MB": b"#" * (10 * MB),
        "50k-keys": "".join(f"k{i}: {i}\n" for i in range(50_001)).encode(),
        "max-comments": b"# c\n" * (MAX_FILE_BYTES // 4),
    }
    folder = tmp_path / "hostile"
    folder.mkdir()
    for name, content in cases.items():
        (folder / f"{name}.yaml").write_bytes(content)

    run = subprocess.run(
        [sys.executable, "-c", CAPPED, str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "capped",
        "10-MB.yaml:1:1: file is 10485760 bytes; the limit is 1000000",
        "50k-keys.yaml:25000:9: k24999: the file has more than 50000 keys and values",
        "billion-laughs.yaml:1:7: lol0: YAML anchors and aliases are not allowed",
        "deep-aliases.yaml:1:5: a0: YAML anchors and aliases are not allowed",
        f"deep-blocks.yaml:33:33: {DEEP_KEYS}: YAML is nested more than 32 levels deep",
        "deep-flow.yaml:1:36: YAML is nested more than 32 levels deep",
        "max-comments.yaml loaded 4",
    ]
