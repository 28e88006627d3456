"""Reading a corpus: one prompt per row of a .txt, .jsonl, .csv or .parquet file, or of a local
Hugging Face `datasets` folder. Each prompt keeps its row index in the file (`example`), so a
result can always be traced back to its line."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import LensError

FORMATS = ".txt (one prompt a line), .jsonl (a text field), .csv or .parquet (a text column), or a datasets folder"


def read_prompts(path, column: str = "text") -> tuple[list[int], list[str]]:
    """(row indices, texts) of the non-empty prompts in `path`. Blank lines of a .txt are skipped
    but still counted, so `example` is the 0-based line number."""
    p = Path(path)
    if not p.exists():
        raise LensError(f"{p}: no such file or folder")
    if p.is_dir():
        texts = _datasets_folder(p, column)
    elif p.suffix == ".txt":
        texts = _lines(p)
    elif p.suffix == ".jsonl":
        texts = _jsonl(p, column)
    elif p.suffix in (".csv", ".parquet"):
        texts = _table(p, column)
    else:
        raise LensError(f"{p}: unknown prompt file type {p.suffix or '(none)'}; give {FORMATS}")
    rows = [i for i, t in enumerate(texts) if t.strip()]
    if not rows:
        raise LensError(f"{p} holds no prompt")
    return rows, [texts[i] for i in rows]


def _read_text(p: Path) -> str:
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LensError(f"{p}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LensError(f"cannot read {p}: {e.strerror or e}") from None


def _lines(p: Path) -> list[str]:
    return [line.rstrip("\r") for line in _read_text(p).split("\n")]


def _jsonl(p: Path, column: str) -> list[str]:
    texts = []
    for i, line in enumerate(_read_text(p).split("\n")):
        if not line.strip():
            texts.append("")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LensError(f"{p} line {i + 1}: not JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # a 5,000-digit number; arrays nested 100,000 deep
            raise LensError(f"{p} line {i + 1}: JSON lens cannot read ({str(e)[:80] or 'nested too deep'})") from None
        if not isinstance(row, dict) or column not in row:
            raise LensError(f"{p} line {i + 1}: no {column!r} field")
        texts.append(_text(row[column], p, i))
    return texts


def _table(p: Path, column: str) -> list[str]:
    import pyarrow as pa

    try:
        if p.suffix == ".csv":
            import pyarrow.csv as pcsv
            # a block holds whole rows: one as large as the file reads any cell ("straddling object" else)
            block = min(max(p.stat().st_size + 1, 1 << 20), (1 << 31) - 1)
            table = pcsv.read_csv(p, read_options=pcsv.ReadOptions(block_size=block),
                                  convert_options=pcsv.ConvertOptions(column_types={column: pa.string()}))
        else:
            import pyarrow.parquet as pq
            table = pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        raise LensError(f"{p}: cannot read it as {p.suffix[1:]} ({str(e).splitlines()[0][:160]})") from None
    return _column(table, column, p)


def _datasets_folder(p: Path, column: str) -> list[str]:
    """A folder written by `datasets.Dataset.save_to_disk`: Arrow stream files listed in state.json
    (read with pyarrow; the `datasets` package is not needed)."""
    import pyarrow as pa

    state = p / "state.json"
    if not state.is_file():
        raise LensError(f"{p} is a folder but not a saved datasets.Dataset (no state.json); give {FORMATS}")
    try:
        files = [p / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
        tables = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
    except (KeyError, TypeError, ValueError, OSError, pa.ArrowInvalid) as e:
        raise LensError(f"{p}: cannot read the saved dataset ({str(e).splitlines()[0][:160]})") from None
    return _column(pa.concat_tables(tables), column, p)


def _column(table, column: str, p: Path) -> list[str]:
    if column not in table.column_names:
        raise LensError(f"{p}: no {column!r} column (columns: {', '.join(table.column_names[:10])})")
    return [_text(v, p, i) for i, v in enumerate(table.column(column).to_pylist())]


def _text(v, p: Path, i: int) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise LensError(f"{p} row {i}: the text is {type(v).__name__}, not a string")
    return v
