"""Where scores go, written as they come: a file, a symbolic link (written through to its target), a pipe or
device (streamed into), or standard output (``"-"``).

Nothing that `output` points at is ever replaced: a regular file is opened in place (truncated when a run starts,
appended to with `resume`) and each batch's rows go out in one write with Ctrl-C and SIGTERM held back, so the file
never holds half a row that this process wrote; after a SIGKILL, `resume` cuts off any incomplete last row and skips
every input already there. Formats: ``jsonl`` and ``csv`` (streamed and resumable), ``table`` (streamed, for
people) and ``json`` (one document; completed when the run ends, also on Ctrl-C).

Names that are not valid UTF-8 keep their bytes in csv and table output and are escaped in JSON (``\\udcff``, which
reads back to the same name); the table shows names with control characters (a newline) quoted and escaped.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import heapq
import io
import json
import os
import signal
import stat
import threading
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .options import OptionError
from .scorer import ScoredImage

try:
    import fcntl
except ImportError:  # Windows: no advisory locks
    fcntl = None

__all__ = ["FORMATS", "RESUMABLE_FORMATS", "KeySet", "OutputError", "ResultWriter", "choose_format",
           "printable_path", "read_rows"]

FORMATS = ("table", "csv", "jsonl", "json")
RESUMABLE_FORMATS = ("csv", "jsonl")
_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
STDOUT = "-"
_FAULT_WIDTH = 25  # the table's fault column: the most probable fault's label and probability


class OutputError(RuntimeError):
    """Writing results failed while the run was going (a full disk, a reader that went away); the rows written
    before stay where they are."""


def printable_path(text: str) -> str:
    """`text` as it is when it prints on one line as valid UTF-8; quoted and escaped (``'a\\nb.jpg'``) otherwise."""
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    return repr(text)


def choose_format(format: str | None, output: str | os.PathLike | None) -> str:
    """`format` checked, or the one `output`'s suffix names (``.csv``, ``.jsonl``, ``.json``), else ``table``."""
    if format is None:
        return "table" if output is None else _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "table")
    if format not in FORMATS:
        raise OptionError("format", format, f"accepted: {', '.join(FORMATS)}")
    return format


def result_row(item: ScoredImage) -> dict:
    row = {"path": item.path, "score": item.score, "raw_score": item.raw_score, "std": item.std,
           "base_scores": item.base_scores}
    if item.faults is not None:
        row["faults"] = item.faults
    return row


def _csv_line(cells: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(cells)
    return buffer.getvalue()


class _Encoder:
    """Text of one format: `header()`, `rows(items)` and `footer(skipped, processes)`; `errors` is how names that
    are not valid UTF-8 are encoded."""

    def __init__(self, format: str, backbone_ids: list[str], info: dict, *, with_index: bool = False,
                 top_k_faults: int | None = None):
        self.format, self.backbone_ids, self.info, self.with_index = format, backbone_ids, info, with_index
        self.top_k_faults = top_k_faults
        self.errors = "backslashreplace" if format in ("json", "jsonl") else "surrogateescape"
        self.first_row = True

    @property
    def columns(self) -> list[str]:
        faults = [f"fault_{rank}{part}" for rank in range(1, (self.top_k_faults or 0) + 1)
                  for part in ("", "_family", "_score")]
        return ["path", "score", "raw_score", "std", *self.backbone_ids, *faults]

    def header(self) -> str:
        if self.format == "csv":
            return _csv_line(self.columns)
        if self.format == "table" and self.top_k_faults:
            return (f"{'score':>8}  {'std':>7}  {'fault':<{_FAULT_WIDTH}}  path\n"
                    f"{'-' * 8}  {'-' * 7}  {'-' * _FAULT_WIDTH}  {'-' * 4}\n")
        if self.format == "table":
            return f"{'score':>8}  {'std':>7}  path\n{'-' * 8}  {'-' * 7}  {'-' * 4}\n"
        if self.format == "json":
            meta = json.dumps(self.info, ensure_ascii=False)[1:-1]
            return "{" + meta + (", " if meta else "") + '"results": ['
        return ""

    def row(self, item: ScoredImage, index: int | None = None) -> str:
        if self.format == "csv":
            faults = [cell for fault in item.faults or () for cell in
                      (fault["label"], fault["family"], f"{fault['score']:.6f}")]
            return _csv_line([item.path, f"{item.score:.6f}", f"{item.raw_score:.6f}", f"{item.std:.6f}",
                              *(f"{item.base_scores[name]:.6f}" for name in self.backbone_ids), *faults])
        if self.format == "table" and self.top_k_faults:
            top = item.faults[0]
            fault = f"{top['label']} {top['score']:.2f}"
            return f"{item.score:>8.4f}  {item.std:>7.4f}  {fault:<{_FAULT_WIDTH}}  {printable_path(item.path)}\n"
        if self.format == "table":
            return f"{item.score:>8.4f}  {item.std:>7.4f}  {printable_path(item.path)}\n"
        row = {"index": index, **result_row(item)} if self.with_index else result_row(item)
        text = json.dumps(row, ensure_ascii=False)
        if self.format == "jsonl":
            return text + "\n"
        separator, self.first_row = ("\n  " if self.first_row else ",\n  "), False
        return separator + text

    def footer(self, skipped: list[tuple[str, str]], processes: int) -> str:
        if self.format != "json":
            return ""
        skipped_rows = ",\n    ".join(json.dumps({"path": path, "reason": reason}, ensure_ascii=False)
                                      for path, reason in skipped)
        return (("\n" if not self.first_row else "") + '],\n"skipped": [' + (f"\n    {skipped_rows}\n"
                if skipped else "") + f'],\n"processes": {processes}}}\n')

    def encode(self, text: str) -> bytes:
        return text.encode("utf-8", self.errors)


class KeySet:
    """Keys (input names) seen in earlier results, held as sorted 64-bit hashes: 8 bytes each, so resuming a run
    of millions of files stays small. A false match needs a 64-bit hash collision."""

    def __init__(self, keys: Iterable[str] = ()):
        hashes = array("Q", (self._hash(key) for key in keys))
        self._hashes = np.sort(np.frombuffer(hashes, dtype=np.uint64)) if hashes else np.empty(0, np.uint64)

    @staticmethod
    def _hash(key: str) -> int:
        return int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")

    def __len__(self) -> int:
        return len(self._hashes)

    def __contains__(self, key: str) -> bool:
        value = np.uint64(self._hash(key))
        position = np.searchsorted(self._hashes, value)
        return bool(position < len(self._hashes) and self._hashes[position] == value)

    def union(self, other: KeySet) -> KeySet:
        merged = KeySet()
        merged._hashes = np.sort(np.concatenate([self._hashes, other._hashes]))
        return merged


def _lines_with_offsets(file) -> Iterator[tuple[bytes, int]]:
    offset = 0
    for line in file:
        offset += len(line)
        yield line, offset


def read_rows(path: str | os.PathLike, format: str) -> Iterator[tuple[dict, int]]:
    """The complete rows of a jsonl or csv results file as dicts, each with the byte offset where it ends. Stops
    before an incomplete last row (a run killed while writing); raises `OptionError` for a file this package did
    not write."""
    with open(path, "rb") as file:
        if format == "jsonl":
            for number, (line, end) in enumerate(_lines_with_offsets(file), start=1):
                try:
                    row = json.loads(line)
                    if not line.endswith(b"\n"):
                        return
                except ValueError:
                    if file.read(1) == b"":  # the last line: cut short
                        return
                    raise OptionError("output", str(path), f"line {number} is not a JSON results row") from None
                if not isinstance(row, dict) or not isinstance(row.get("path"), str):
                    raise OptionError("output", str(path), f"line {number} is not a results row (no 'path')")
                yield row, end
            return
        state = {"end": 0, "complete": True}

        def decoded_lines():
            for line, end in _lines_with_offsets(file):
                state["end"], state["complete"] = end, line.endswith(b"\n")
                yield line.decode("utf-8", "surrogateescape")

        size = os.fstat(file.fileno()).st_size
        reader = csv.reader(decoded_lines())
        try:
            header = next(reader, None)
            if header is None or not state["complete"]:
                return
            yield {"header": header}, state["end"]
            for cells in reader:
                if len(cells) != len(header) or not state["complete"]:
                    if state["end"] == size:  # the last row, cut short (perhaps inside a quoted name)
                        return
                    raise OptionError("output", str(path), f"line {reader.line_num} does not match its header")
                yield dict(zip(header, cells)), state["end"]
        except csv.Error:  # an unterminated quote: only a row cut short at the end of the file
            if state["end"] != size:
                raise OptionError("output", str(path), "is not a csv file this command wrote") from None


def _is_image(path: str) -> bool:
    """A file PIL recognises as an image (results must never be written over a photo given by mistake)."""
    from PIL import Image

    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True
    except Exception:  # not an image (PIL raises assorted errors for other content)
        return False


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait until the block ends, so a write to a file is never cut in half by them.

    The signals are caught and sent again afterwards: blocking them with a thread's signal mask would not do, since
    the kernel then hands them to another thread (torch's) and Python still runs its handler in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {number: signal.signal(number, lambda caught, frame: pending.append(caught))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        for number in dict.fromkeys(pending):
            signal.raise_signal(number)


class ResultWriter:
    """An output destination, checked and opened before any scoring; `begin` starts the results (truncating a
    regular file, or reading what it holds with `resume`), `write` adds rows, `finish` ends the document.

    `output`: a path, ``"-"`` or None for standard output. Paths that name this process's standard output or
    error (``/dev/stdout``) write there; other pipes and devices are opened for writing (a FIFO waits for its
    reader) and streamed into. Bad destinations raise `OptionError`; failures while writing `OutputError`.
    """

    def __init__(self, output: str | os.PathLike | None, format: str, *, resume: bool = False):
        self.name = STDOUT if output is None else str(output)
        self.format, self.resume = format, resume
        self.done = KeySet()
        self.regular, self._created, self._fd = False, False, None
        self._encoder: _Encoder | None = None
        if resume and self.name == STDOUT:
            raise OptionError("resume", True, f"needs an output file ({' or '.join(RESUMABLE_FORMATS)}) to read back")
        if resume and format not in RESUMABLE_FORMATS:
            raise OptionError("resume", True, f"needs a {' or '.join(RESUMABLE_FORMATS)} output, not {format}")
        self._fd = self._open()
        if resume and not self.regular:
            self.close()
            raise OptionError("resume", True, f"needs a regular file to read back; {self.name} is a pipe or device")

    def _open(self) -> int:
        if self.name == STDOUT:
            return self._dup_standard(1)
        try:
            status = os.stat(self.name)
        except FileNotFoundError:
            status = None
        except OSError as error:
            raise OptionError("output", self.name, (error.strerror or str(error)).lower()) from None
        if status is not None:
            if stat.S_ISDIR(status.st_mode):
                raise OptionError("output", self.name, "is a folder; give a file name")
            for fd in (1, 2):  # /dev/stdout, /proc/self/fd/1...: keep the shell's own redirection as it is
                with contextlib.suppress(OSError):
                    if os.path.samestat(status, os.fstat(fd)):
                        return self._dup_standard(fd)
            self.regular = stat.S_ISREG(status.st_mode)
            if self.regular and _is_image(self.name):
                raise OptionError("output", self.name, "is an image file; results would overwrite it")
        else:
            parent = Path(os.path.realpath(self.name)).parent
            if not parent.is_dir():
                raise OptionError("output", self.name, f"its folder {parent} does not exist")
            self.regular = True
        flags = os.O_WRONLY | (os.O_APPEND | os.O_CREAT if self.regular else 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.name, flags, 0o666)
        except OSError as error:
            raise OptionError("output", self.name, f"cannot write it ({(error.strerror or str(error)).lower()})") \
                from None
        self._created = status is None
        if self.regular and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise OptionError("output", self.name, "another process is writing it (it is locked)") from None
        return fd

    def _dup_standard(self, fd: int) -> int:
        try:
            return os.dup(fd)
        except OSError:
            raise OptionError("output", self.name, "standard output is closed") from None

    def begin(self, backbone_ids: list[str], info: dict, *, with_index: bool = False,
              top_k_faults: int | None = None) -> None:
        """Start the results: read back what a resumed file holds (cutting off an incomplete last row), else
        truncate a regular file; then the header. With `top_k_faults`, rows name that many faults."""
        self._encoder = _Encoder(self.format, backbone_ids, info, with_index=with_index, top_k_faults=top_k_faults)
        keep = 0
        if self.resume:
            keys, keep = self._read_back()
            self.done = KeySet(keys)
        if self.regular:
            os.ftruncate(self._fd, keep)
        if not keep:
            self._write(self._encoder.header())

    def _read_back(self) -> tuple[list[str], int]:
        keys, end = [], 0
        for row, end in read_rows(self.name, self.format):
            if "header" in row:
                if row["header"] != self._encoder.columns:
                    raise OptionError("output", self.name, f"holds the columns {row['header']}; this model writes "
                                                           f"{self._encoder.columns}: give another file")
                continue
            keys.append(row["path"])
        return keys, end

    def write(self, items: list[ScoredImage], indices: list[int] | None = None) -> None:
        """Append the scored `items` (skipped ones are not rows) in one write."""
        rows = [self._encoder.row(item, None if indices is None else indices[position])
                for position, item in enumerate(items) if item.ok]
        if rows:
            self._write("".join(rows))

    def finish(self, skipped: list[tuple[str, str]] = (), processes: int = 1) -> None:
        """End the document (json) and close."""
        if self._encoder is not None and self._fd is not None:
            self._write(self._encoder.footer(list(skipped), processes))
        self.close()

    def held(self) -> contextlib.AbstractContextManager:
        """A block that Ctrl-C and SIGTERM wait for when the output is a regular file, so that a row and the counts
        kept beside it change together. Streams are not held: a slow reader must not make Ctrl-C wait."""
        return _signals_held() if self.regular else contextlib.nullcontext()

    def _write(self, text: str) -> None:
        data = memoryview(self._encoder.encode(text))
        try:
            with self.held():
                while data:
                    data = data[os.write(self._fd, data):]
        except BrokenPipeError:
            raise OutputError(f"{self.name}: the reader closed the pipe") from None
        except OSError as error:
            raise OutputError(f"cannot write {self.name}: {error.strerror or error}") from None

    def close(self) -> None:
        """Close; a file this writer created is removed when no run began in it."""
        if self._fd is None:
            return
        os.close(self._fd)
        self._fd = None
        if self._created and self._encoder is None:
            with contextlib.suppress(OSError):
                os.unlink(self.name)


def ascending_runs(path: str | os.PathLike) -> list[Iterator[tuple[int, dict]]]:
    """A jsonl part file (rows with an `index`) as runs of rows in ascending index order: one per run of the
    command that appended to it, each read lazily."""
    starts, previous, start = [], None, 0
    for row, end in read_rows(path, "jsonl"):
        if previous is None or row["index"] < previous:
            starts.append(start)
        previous, start = row["index"], end
    bounds = list(zip(starts, [*starts[1:], start]))
    return [_rows_between(path, low, high) for low, high in bounds]


def _rows_between(path, low: int, high: int) -> Iterator[tuple[int, dict]]:
    with open(path, "rb") as file:
        file.seek(low)
        while file.tell() < high:
            row = json.loads(file.readline())
            yield row.pop("index"), row


def merged_rows(parts: list[Path]) -> Iterator[ScoredImage]:
    """Rows of every part file in input order (the parts' indices), as `ScoredImage`s."""
    runs = [run for part in parts for run in ascending_runs(part)]
    for _, row in heapq.merge(*runs, key=lambda entry: entry[0]):
        yield ScoredImage(**row)

