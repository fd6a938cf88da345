"""The docs run as tests: every shell block of README.md, models/README.md,
docs/*.md and models/*/COMMAND.md is executed as a user would paste it.

A block is a fenced ```bash (or sh, shell) block. The blocks of one page
run in order in one scratch folder (so a later block finds what an earlier
one wrote), with this venv's `vit-flowers` and `python` first on PATH and
`scripts/` reachable as in a checkout. What may change on the way is
declared in an HTML comment right above the block, invisible on the page:

    <!-- docs-test: slow sub="--epochs 25=>--epochs 1" creates="runs/tiny/config.json" -->

- `skip="why"`: not run (the network, a GPU, a server); the reason is shown.
- `slow`: run under `-m slow` only.
- `needs=photos`: skipped when ../shared/flower_photos is absent.
- `sub="OLD=>NEW"` (repeatable): a substitution for small inputs; OLD must
  occur in the block, so a block that changes under its declaration fails.
  NEW may name `{photos}` and `{photos2}` (two small folders of class
  subfolders this runner makes), `{repo}` and `{shared}`.
- `drop="TEXT"` (repeatable): leave out the lines holding TEXT (one command
  of several that needs the network, say); TEXT must occur.
- `setup="COMMAND"`: run before the block, in the same folder.
- `exit=N`: the exit status the block ends with (default 0; the block runs
  under `set -e`, so any failing command fails it).
- `creates="PATH ..."`: files the block promises; each must exist and parse
  (CSV with pandas, JSON, PNG with Pillow, HTML holding a body).

A fenced block without a language that starts like a command would escape
all of this; `test_every_command_block_is_declared_as_shell` refuses it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PAGES = [REPO / "README.md", REPO / "models" / "README.md", *sorted((REPO / "docs").glob("*.md")),
         *sorted((REPO / "models").glob("*/COMMAND.md"))]
SHELL = {"bash", "sh", "shell"}
FENCE = re.compile(r"^```(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*docs-test:(.*?)-->\s*$")
COMMAND_START = re.compile(r"^\s*(vit-flowers|python\d*(\.\d+)?|make|pip|curl|KERAS_BACKEND=)\b")
BLOCK_TIMEOUT = 900


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    options: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse_directive(text: str) -> dict:
    """`slow sub="a=>b" sub="c=>d" exit=2` -> {"slow": True, "sub": [...], "exit": "2"}."""
    options: dict = {"sub": [], "drop": []}
    for token in shlex.split(text):
        key, _, value = token.partition("=")
        if key in ("sub", "drop"):
            options[key].append(value)
        elif key in ("skip", "setup", "exit", "creates", "needs"):
            options[key] = value
        elif key == "slow" and not value:
            options["slow"] = True
        else:
            raise ValueError(f"unknown docs-test option {token!r}")
    return options


def blocks_of(page: Path) -> list[Block]:
    """Every fenced block of a page with the directive right above it."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, lang = i, match.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = lines[start - 1] if start else ""
        directive = DIRECTIVE.match(above)
        options = parse_directive(directive.group(1)) if directive else {"sub": [], "drop": []}
        found.append(Block(page, start + 1, lang, "\n".join(lines[start + 1:end]) + "\n", options))
        i = end + 1
    return found


ALL_BLOCKS = [b for page in PAGES for b in blocks_of(page)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL]


def _params():
    for block in SHELL_BLOCKS:
        marks = [pytest.mark.slow] if block.options.get("slow") else []
        yield pytest.param(block, id=block.id, marks=marks)


def make_photo_folders(root: Path) -> dict[str, Path]:
    """Two small, disjoint folders of class subfolders (drawn flowers)."""
    from vit_flowers.synthetic import write_synthetic_flowers

    folders = {}
    for name, seed in (("photos", 1), ("photos2", 2)):
        folders[name] = root / name
        write_synthetic_flowers(folders[name], n_per_class=6, size=64, seed=seed)
    return folders


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """One scratch folder per page (shared by its blocks, in order), the
    environment the blocks run in and the placeholders of substitutions."""
    root = tmp_path_factory.mktemp("docs")
    places = {k: str(v) for k, v in make_photo_folders(root / "inputs").items()}
    places.update(repo=str(REPO), shared=str(SHARED))
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.pop("VIRTUAL_ENV", None)
    return {"root": root, "places": places, "env": env, "dirs": {}}


def page_dir(workspace: dict, page: Path) -> Path:
    """The page's scratch folder, laid out like a checkout where a block needs it."""
    dirs = workspace["dirs"]
    if page not in dirs:
        folder = workspace["root"] / str(page.relative_to(REPO)).replace("/", "_")
        folder.mkdir()
        (folder / "scripts").symlink_to(REPO / "scripts")
        dirs[page] = folder
    return dirs[page]


def prepared_code(block: Block, places: dict) -> str:
    """The block with its declared line drops and substitutions; each must
    match, so a block that drifted from its declaration fails here."""
    code = block.code
    for text in block.options["drop"]:
        assert text in code, f"{block.id}: drop={text!r} matches no line: update the docs-test comment"
        code = "\n".join(line for line in code.splitlines() if text not in line) + "\n"
    for sub in block.options["sub"]:
        old, sep, new = sub.partition("=>")
        assert sep and old, f"{block.id}: sub={sub!r} is not OLD=>NEW"
        assert old in code, f"{block.id}: sub {old!r} is not in the block: update the docs-test comment"
        code = code.replace(old, new.format(**places))
    return code


def check_created(folder: Path, paths: str, block_id: str) -> None:
    """Each promised file exists and parses as its kind."""
    import pandas as pd
    from PIL import Image

    for name in paths.split():
        path = folder / name
        assert path.exists(), f"{block_id}: promised {name} was not written"
        if path.suffix == ".csv":
            assert len(pd.read_csv(path)) > 0, f"{block_id}: {name} has no rows"
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".png":
            with Image.open(path) as image:
                image.verify()
        elif path.suffix == ".html":
            assert "<body" in path.read_text(encoding="utf-8"), f"{block_id}: {name} is not a page"


@pytest.mark.parametrize("block", _params())
def test_shell_block_runs_as_written(block: Block, workspace: dict):
    """The block runs (as declared) and writes what it promises."""
    options = block.options
    if "skip" in options:
        pytest.skip(f"{block.id}: {options['skip']}")
    if options.get("needs") == "photos" and not (SHARED / "flower_photos").is_dir():
        pytest.skip(f"{block.id}: needs {SHARED / 'flower_photos'}")
    folder = page_dir(workspace, block.page)
    code = prepared_code(block, workspace["places"])
    script = "set -euo pipefail\n" + (options.get("setup", "") + "\n" if "setup" in options else "") + code
    done = subprocess.run(["bash", "-c", script], cwd=folder, env=workspace["env"], capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT)
    expected = int(options.get("exit", 0))
    assert done.returncode == expected, (f"{block.id} exited {done.returncode}, the page says {expected}\n"
                                         f"--- block as run\n{code}--- stderr\n{done.stderr[-3000:]}")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    if "creates" in options:
        check_created(folder, options["creates"], block.id)


def test_every_command_block_is_declared_as_shell():
    """A fenced block that holds commands but names no shell would be read by
    people and skipped by this file: each is a ```bash block (or ```text)."""
    loose = [b.id for b in ALL_BLOCKS if b.lang == "" and COMMAND_START.match(b.code)]
    assert not loose, f"blocks of commands without a language (make them ```bash): {loose}"


def test_every_directive_belongs_to_a_shell_block():
    """A docs-test comment above anything else (a block turned into ```text,
    a paragraph) would silently stop guarding; each sits above a shell block."""
    stray = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            if DIRECTIVE.match(line):
                below = FENCE.match(lines[n + 1]) if n + 1 < len(lines) else None
                if not below or below.group(1) not in SHELL:
                    stray.append(f"{page.relative_to(REPO)}:{n + 1}")
    assert not stray, f"docs-test comments not right above a ```bash block: {stray}"


def test_the_runner_sees_the_pages_and_their_blocks():
    """The collector finds every page and more than a handful of blocks (a
    broken fence pattern would otherwise pass by running nothing)."""
    assert {p.name for p in PAGES} >= {"README.md", "attention.md", "primer.md", "COMMAND.md"}
    assert len(SHELL_BLOCKS) >= 15
    assert parse_directive('slow sub="a=>b" sub="c=>d" exit=2') == {"sub": ["a=>b", "c=>d"], "drop": [], "slow": True,
                                                                    "exit": "2"}
    with pytest.raises(ValueError, match="unknown docs-test option"):
        parse_directive("slwo")
