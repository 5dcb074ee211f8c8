"""Propose the params.yaml `data` block for a CSV; with --write, switch the project to that table.

    python -m churn.tools.datablock FILE.csv [--target COLUMN] [--encoding ENCODING] [--write]

Every column gets one role, printed with the reason: the target (--target, else the one column named like
churn/target/label/y/class/outcome with two values) and its positive label (the minority value); id columns
(text, or integers named like an id or numbering the rows, unique on >= 99% of rows); numbers (every non-blank
value parses as a number, blanks as core.schema.BLANK); free text, ignored (text with > 50 distinct values
that are > 10% of the rows); empty or constant columns, ignored; categories (the other text columns). The
file's separator is read off its header (`,` `;` tab `|`) and its encoding is --encoding (default utf-8); both
go into the block (data.separator, data.encoding).

--write makes the switch whole, so DVC stays healthy: the CSV goes under data/raw/ (copied there if it is
elsewhere), `dvc add` tracks it, params.yaml's `data` block is rewritten (nothing else in the file changes;
the result is validated first), and the previous table's pointer (the bundled sample's
data/raw/customers.csv.dvc) leaves DVC tracking, its file removed from the workspace (it stays in the DVC
cache and in git history). Nothing is committed: the command prints the `git add` line to run.
"""

from __future__ import annotations

import argparse
import io
import logging
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from churn.core.schema import BLANK
from churn.errors import ChurnError, DataError
from churn.storage.csv_reader import guess_separator, read_csv
from churn.system import atomic_path, dvc, file_md5, first_line, git

log = logging.getLogger(__name__)

RAW_DIR = Path("data/raw")
TARGET_NAMES = ("churn", "churned", "target", "label", "y", "class", "outcome")
POSITIVE_WORDS = ("1", "yes", "y", "true", "churn", "churned")  # break a 50/50 tie between the two labels
ID_SHARE = 0.99  # distinct values per row at which a column identifies rows
FREE_TEXT_VALUES = 50  # free text: more distinct values than this ...
FREE_TEXT_SHARE = 0.10  # ... and than this share of the non-blank rows
FLOW_WIDTH = 110  # a column list longer than this is written one column per line
# customer_id, customerID, CustomerId, id, ID, uuid, row-id: the name says the column identifies the row.
ID_NAME = re.compile(r"(?i:(^|[_\W])(id|uuid|guid)($|[_\W]))|[a-z0-9](ID|Id)$")


@dataclass(frozen=True)
class Decision:
    column: str
    role: str  # target | id_columns | numerical | categorical | ignored
    why: str


@dataclass(frozen=True)
class Proposal:
    """Each column's role and the target's positive label, as it appears in the file."""

    decisions: tuple[Decision, ...]
    target: str
    positive_label: str
    encoding: str = "utf-8"
    separator: str = ","

    def columns(self, role: str) -> list[str]:
        return [d.column for d in self.decisions if d.role == role]

    def block(self, raw_path: str) -> dict[str, Any]:
        """The params.yaml `data` block, values as DVC will read them back."""
        return {
            "raw_path": raw_path,
            "id_columns": self.columns("id_columns"),
            "numerical": self.columns("numerical"),
            "categorical": self.columns("categorical"),
            "target": self.target,
            "positive_label": label_value(self.positive_label),
            "encoding": self.encoding,
            "separator": self.separator,
        }


def label_value(text: str) -> int | str:
    """The label as params.yaml holds it: a plain integer when it reads back as the same text (1), else a
    string (quoted when written, so "Yes", "true" or "1.0" keep their spelling): core.schema compares
    `str(positive_label)` with the target's text."""
    return int(text) if re.fullmatch(r"-?(0|[1-9][0-9]*)", text) else text


# --- reading --------------------------------------------------------------------------------------------------


def read_header(path: Path, encoding: str = "utf-8") -> str:
    """The table's first line; a file that is missing, empty or not `encoding` text is one line."""
    try:
        with path.open(newline="", encoding=encoding) as handle:
            header = handle.readline()
            handle.read(1 << 20)  # the first MB: a wrong encoding usually shows there
    except FileNotFoundError:
        raise DataError(str(path), "file not found") from None
    except UnicodeError:
        raise DataError(
            str(path), f"not {encoding} text; pass --encoding (latin-1 or cp1252 for most Western European files)"
        ) from None
    except (OSError, LookupError) as exc:
        raise DataError(str(path), f"cannot read it ({first_line(exc)})") from None
    if not header.strip():
        raise DataError(str(path), "file is empty; expected a CSV with a header row")
    return header


def read_table(path: Path, encoding: str = "utf-8", separator: str | None = None) -> pd.DataFrame:
    """Every cell as text, read by the pipeline's CSV reader (separator: the header's, unless given); a file
    it could not read is one line."""
    separator = separator or sniff_separator(read_header(path, encoding))
    return read_csv(path, encoding, separator)


def sniff_separator(header: str) -> str:
    """The header's field separator (data.separator): a comma unless the header has none and another
    separator splits it."""
    if "," in header:
        return ","
    return guess_separator(header.rstrip("\r\n")) or ","  # one column: read as CSV and let the roles show it


# --- the roles --------------------------------------------------------------------------------------------------


def _text(column: pd.Series) -> pd.Series:
    return column.astype(str).str.strip()


def _classes(column: pd.Series) -> pd.Series:
    """Counts of a target's values; an empty cell is an unlabelled row, as core.schema reads it."""
    text = _text(column)
    return text[text != ""].value_counts()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _role(name: str, column: pd.Series) -> Decision:
    text = _text(column)
    rows = len(text)
    blank = text.str.lower().isin(BLANK)
    values = text[~blank]
    if values.empty:
        return Decision(name, "ignored", "empty: no values")
    distinct = values.nunique()
    if distinct == 1:
        return Decision(name, "ignored", f"constant: every value is {values.iloc[0]!r}")
    numbers = pd.to_numeric(values, errors="coerce")
    blanks = f", {_plural(int(blank.sum()), 'blank')} (missing)" if blank.any() else ""
    unique = distinct >= ID_SHARE * rows
    named_id = bool(ID_NAME.search(name))
    if numbers.notna().all():
        integers = bool((numbers == numbers.round()).all())
        row_numbers = integers and unique and numbers.max() - numbers.min() == rows - 1
        if integers and unique and (named_id or row_numbers):
            why = "named like an id" if named_id else f"numbers the rows ({numbers.min():g}..{numbers.max():g})"
            return Decision(name, "id_columns", f"integers unique on {distinct} of {rows} rows, {why}")
        return Decision(name, "numerical", f"numbers, {_plural(distinct, 'distinct value')}{blanks}")
    if unique and (named_id or not values.str.contains(r"\s").any()):
        why = "named like an id" if named_id else "single words"
        return Decision(name, "id_columns", f"text unique on {distinct} of {rows} rows, {why}")
    if distinct > FREE_TEXT_VALUES and distinct > FREE_TEXT_SHARE * len(values):
        return Decision(name, "ignored", f"free text: {distinct} distinct values in {len(values)} rows")
    mixed = f" (not numbers: {values[numbers.isna()].iloc[0]!r})" if numbers.notna().any() else ""
    return Decision(name, "categorical", f"text, {_plural(distinct, 'value')}{mixed}{blanks}")


def _choose_target(frame: pd.DataFrame, target: str | None, source: str) -> str:
    if target is not None:
        if target not in frame.columns:
            raise DataError(source, f"no column {target!r} (columns: {', '.join(frame.columns)})")
        classes = _classes(frame[target])
        if len(classes) != 2:
            shown = ", ".join(map(repr, classes.index[:5]))
            raise DataError(source, f"target {target!r} must have two values, found {len(classes)}: {shown}")
        return target
    named = [c for c in frame.columns if re.sub(r"\W+", "_", str(c)).strip("_").lower() in TARGET_NAMES]
    binary = [c for c in named if len(_classes(frame[c])) == 2]
    if len(binary) == 1:
        return binary[0]
    if binary:
        raise DataError(source, f"several columns could be the target ({', '.join(binary)}); choose with --target")
    raise DataError(
        source,
        f"no column named {'/'.join(TARGET_NAMES)} with two values; name the target with --target COLUMN",
    )


def _positive(classes: pd.Series) -> tuple[str, str]:
    """The minority value (a tie goes to a yes-like value, else the last in sort order), and why."""
    counts = classes.sort_index()
    (a, n_a), (b, n_b) = counts.items()
    shown = f"{a!r} ({n_a} rows) and {b!r} ({n_b} rows)"
    if n_a != n_b:
        label = a if n_a < n_b else b
        return label, f"two values, {shown}; positive label: the minority, {label!r}"
    yes_like = [v for v in (a, b) if v.lower() in POSITIVE_WORDS]
    label = yes_like[0] if len(yes_like) == 1 else b
    return label, f"two values, {shown}; positive label: {label!r} (a tie: check it)"


def propose(frame: pd.DataFrame, target: str | None = None, source: str = "table") -> Proposal:
    """Each column's role in the data block, with the reason; `frame` holds the file's text."""
    target = _choose_target(frame, target, source)
    label, why = _positive(_classes(frame[target]))
    decisions = [Decision(target, "target", why) if c == target else _role(c, frame[c]) for c in frame.columns]
    if not any(d.role in ("numerical", "categorical") for d in decisions):
        raise DataError(source, "no feature columns: every column is the target, an id, free text, empty or constant")
    return Proposal(tuple(decisions), target, label)


# --- params.yaml ------------------------------------------------------------------------------------------------


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip, YAML 1.2 as DVC reads params.yaml
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _yaml_values(block: dict[str, Any]) -> dict[str, Any]:
    """The block's values styled for the file: short column lists inline, a string label quoted."""
    from ruamel.yaml.comments import CommentedSeq
    from ruamel.yaml.scalarstring import DoubleQuotedScalarString

    styled: dict[str, Any] = {}
    for key, value in block.items():
        if isinstance(value, list):
            value = CommentedSeq(value)
            if len(f"  {key}: [{', '.join(map(str, value))}]") <= FLOW_WIDTH:
                value.fa.set_flow_style()
        elif key in ("positive_label", "separator") and isinstance(value, str):
            value = DoubleQuotedScalarString(value)
        styled[key] = value
    return styled


def render_block(block: dict[str, Any]) -> str:
    """`data:` and the block, as --write puts it in params.yaml."""
    out = io.StringIO()
    _yaml().dump({"data": _yaml_values(block)}, out)
    return out.getvalue()


def _block_lines(text: str, doc: Any, key: str) -> tuple[int, int]:
    """Lines [start, end) of a top-level block, without the blank and comment lines that precede the next
    block (they belong to it)."""
    keys = list(doc)
    lines = text.splitlines(keepends=True)
    start = doc.lc.key(key)[0]
    end = doc.lc.key(keys[keys.index(key) + 1])[0] if key != keys[-1] else len(lines)
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    return start, end


def _drop_undeclared_slices(doc: Any, block: dict[str, Any]) -> list[str]:
    """evaluate.slices without the columns the new data block does not declare (in place); ["evaluate"] when
    that changed it, so that block is rewritten too."""
    evaluate = doc.get("evaluate")
    slices = evaluate.get("slices") if isinstance(evaluate, dict) else None
    if not slices:
        return []
    declared = {*block.get("numerical", []), *block.get("categorical", [])}
    dropped = [column for column in slices if column not in declared]
    for column in dropped:
        slices.remove(column)
    if dropped:
        log.info("evaluate.slices: dropped %s (not columns of the new data block)", ", ".join(map(str, dropped)))
    return ["evaluate"] if dropped else []


def rewrite_data_block(text: str, block: dict[str, Any], source: str = "params.yaml") -> str:
    """params.yaml's text with its `data` block replaced by `block` (and evaluate.slices without the columns it
    no longer declares); every other line kept byte for byte, and the result validated as the pipeline will read
    it."""
    from ruamel.yaml import YAML, YAMLError

    from churn.config import parse_params

    yaml = _yaml()
    try:
        doc = yaml.load(text)
    except YAMLError as exc:
        raise ChurnError(f"{source}: not valid YAML ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
        raise ChurnError(f"{source}: missing key data (a mapping); restore the file's data block first")
    data = doc["data"]
    for key in [k for k in data if k not in block]:
        del data[key]
    for key, value in _yaml_values(block).items():
        data[key] = value  # in place: the block's own comments stay
    rewritten = ["data", *_drop_undeclared_slices(doc, block)]
    out = io.StringIO()
    yaml.dump(doc, out)
    dumped = out.getvalue()
    lines, new_lines = text.splitlines(keepends=True), dumped.splitlines(keepends=True)
    spans = {key: _block_lines(text, yaml.load(text), key) for key in rewritten}
    for key in sorted(rewritten, key=lambda k: spans[k][0], reverse=True):  # the later block first: lines move
        start, end = spans[key]
        new_start, new_end = _block_lines(dumped, yaml.load(dumped), key)
        lines = lines[:start] + new_lines[new_start:new_end] + lines[end:]
    result = "".join(lines)
    raw = YAML(typ="safe").load(result)
    if raw.get("data") != block:
        raise ChurnError(f"{source}: the rewritten data block does not read back as written: {raw.get('data')}")
    parse_params(raw, source)
    return result


# --- the switch -------------------------------------------------------------------------------------------------


def repo_root() -> Path:
    root = git("rev-parse", "--show-toplevel", check=False)
    return Path(root) if root else Path.cwd()


def raw_path_for(csv_path: Path, root: Path) -> Path:
    """Where the table lives in the project, relative to the root: where it is if under data/raw/, else
    data/raw/<name>."""
    try:
        inside = csv_path.resolve().relative_to(root.resolve())
    except ValueError:
        return RAW_DIR / csv_path.name
    return inside if inside.parent == RAW_DIR or RAW_DIR in inside.parents else RAW_DIR / csv_path.name


def _current_raw_path(params_path: Path) -> str | None:
    from churn.config import read_yaml

    raw = read_yaml(params_path)
    data = raw.get("data") if isinstance(raw, dict) else None
    return data.get("raw_path") if isinstance(data, dict) else None


def _pointer_of(path: Path) -> Path:
    return path.with_name(path.name + ".dvc")


def _check_old_pointer(root: Path, old: Path) -> Path | None:
    """The old table's pointer, if DVC tracks it; refuses to drop a file changed since its `dvc add`."""
    from churn.tools.rawdata import pointer_md5

    pointer = root / _pointer_of(old)
    if not pointer.exists():
        return None
    if (root / old).exists() and file_md5(root / old) != pointer_md5(pointer):
        raise ChurnError(
            f"{old}: changed since its pointer {_pointer_of(old)} was made; keep the change with "
            f"`bin/dvc add {old}` and commit, or restore it with `bin/dvc checkout {old}`, then switch"
        )
    return pointer


def switch(csv_path: Path, frame: pd.DataFrame, proposal: Proposal, root: Path) -> list[str]:
    """Make the proposal for the table `frame` (read from `csv_path`) the project's data, DVC included;
    returns the paths to `git add`."""
    from churn.config import DataParams
    from churn.core.schema import clean_table

    params_path = root / "params.yaml"
    if not params_path.exists():
        raise ChurnError(f"{params_path}: not found; run the command inside the project's git repository")
    raw_path = raw_path_for(csv_path, root)
    block = proposal.block(raw_path.as_posix())
    text = params_path.read_text()
    new_text = rewrite_data_block(text, block, str(params_path.relative_to(root)))
    # The cleaning prepare runs: a column the proposal got wrong fails here, before anything changed.
    clean_table(frame, DataParams(**block), str(csv_path))
    old = _current_raw_path(params_path)
    old_pointer = _check_old_pointer(root, Path(old)) if old and Path(old) != raw_path else None

    target = root / raw_path
    if target.resolve() != csv_path.resolve():
        if target.exists() and file_md5(target) != file_md5(csv_path):
            raise ChurnError(f"{raw_path}: exists and differs from {csv_path}; rename one of them, then switch")
        if not target.exists():
            with atomic_path(target) as staged:
                shutil.copyfile(csv_path, staged)
            log.info("copied %s to %s (the project's data lives under %s/)", csv_path, raw_path, RAW_DIR)
    dvc("add", "--quiet", raw_path.as_posix(), cwd=root)
    log.info("dvc add %s: tracked by %s", raw_path, _pointer_of(raw_path))
    with atomic_path(params_path) as staged:
        staged.write_text(new_text)
    log.info("params.yaml: data block rewritten for %s", raw_path)
    changed = ["params.yaml", _pointer_of(raw_path).as_posix(), (raw_path.parent / ".gitignore").as_posix()]
    if old_pointer is not None:
        # Without this the old pointer stays in git: a clone without its file in the DVC cache gets
        # `not in cache` from `dvc status` and a failing `dvc checkout` forever. Its file (equal to the
        # pointer) goes to the cache first, so removing it from the workspace loses nothing.
        if (root / old).exists():
            dvc("commit", "--force", "--quiet", old_pointer.relative_to(root).as_posix(), cwd=root)
        dvc("remove", "--outs", "--quiet", old_pointer.relative_to(root).as_posix(), cwd=root)
        log.info("dvc remove %s: %s is no longer tracked (it stays in the DVC cache and git history)", old, old)
        old_dir = Path(old).parent
        changed += [_pointer_of(Path(old)).as_posix(), (old_dir / ".gitignore").as_posix()]
    paths = dict.fromkeys(p for p in changed if (root / p).exists() or git("ls-files", p, cwd=root, check=False))
    return list(paths)


# --- the command ------------------------------------------------------------------------------------------------


def report(proposal: Proposal, block: dict[str, Any]) -> str:
    width = max(len(d.column) for d in proposal.decisions)
    lines = [f"  {d.column:<{width}}  {d.role:<12} {d.why}" for d in proposal.decisions]
    return "\n".join(["columns:", *lines, "", render_block(block).rstrip()])


def main(argv: list[str] | None = None) -> None:
    from churn.cli import run_cli

    def _main() -> None:
        parser = argparse.ArgumentParser(prog="python -m churn.tools.datablock", description=__doc__.splitlines()[0])
        parser.add_argument("csv", type=Path, metavar="FILE.csv", help="the table, one row per customer")
        parser.add_argument("--target", help="the column to predict (default: the one named like churn/target/...)")
        parser.add_argument("--encoding", default="utf-8", help="the file's text encoding (default: utf-8)")
        parser.add_argument("--write", action="store_true", help="write the block to params.yaml and dvc add the file")
        args = parser.parse_args(argv)
        root = repo_root()
        separator = sniff_separator(read_header(args.csv, args.encoding))
        frame = read_table(args.csv, args.encoding, separator)
        log.info("read %s: %d rows, %d columns", args.csv, len(frame), len(frame.columns))
        proposal = propose(frame, args.target, str(args.csv))
        proposal = replace(proposal, encoding=args.encoding, separator=separator)
        raw_path = raw_path_for(args.csv, root)
        print(report(proposal, proposal.block(raw_path.as_posix())))  # noqa: T201 - the command's output
        if not args.write:
            print(f"\nrun again with --write to put this block in params.yaml and `dvc add` {raw_path}")  # noqa: T201
            return
        paths = switch(args.csv, frame, proposal, root)
        print(  # noqa: T201
            f"\nnext: git add {' '.join(paths)} && git commit -m 'data: {raw_path.name}'\n"
            "      bin/dvc push && make run"
        )

    run_cli(_main)


if __name__ == "__main__":
    main()
