"""Turn the names table into tensors: the notebook's alphabet, index sequences, labels, a split.

Encoding is vectorized over Arrow's byte buffer (normalized names are pure ASCII, one byte a
character), so there is no per-name one-hot loop as in the notebook.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline.config import ALLOWED_CHARACTERS, OOV_CHARACTER, SplitConfig, name_key
from pipeline.errors import NamelangError, NamelangWarning, typed_first_line
from pipeline.torch_files import load_torch_file, save_torch_file

ALPHABET = ALLOWED_CHARACTERS + OOV_CHARACTER  # the notebook's 58 symbols
PAD = 0  # index 0 pads; symbol i of ALPHABET is index i + 1
VOCAB_SIZE = len(ALPHABET) + 1
TRAIN, VALIDATION, TEST = 0, 1, 2
SPLIT_NAMES = ("train", "validation", "test")
TENSORS_FILE = "tensors.pt"

# n-gram codes (the hashed branch of `pipeline.model`, the language models of `pipeline.charlm`)
BOS, EOS = VOCAB_SIZE, VOCAB_SIZE + 1  # begin / end of name markers
SYMBOL_BASE = 64  # > every symbol index: an n-gram's code is its symbols as base-64 digits, unique
_UPPER_FIRST, _UPPER_LAST = ALPHABET.index("A") + 1, ALPHABET.index("Z") + 1

_BYTE_TO_INDEX = np.full(256, ALPHABET.index(OOV_CHARACTER) + 1, dtype=np.uint8)
for _i, _c in enumerate(ALPHABET):
    _BYTE_TO_INDEX[ord(_c)] = _i + 1


def encode_names(names: pa.Array | pa.ChunkedArray | list[str], max_len: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (ASCII) names to a padded `uint8` index matrix and their lengths."""
    arr = pa.array(names, type=pa.string()) if isinstance(names, list) else names
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.string():  # e.g. large_string (64-bit offsets) from Polars or pandas
        arr = arr.cast(pa.string())
    arr = pc.fill_null(arr, "")
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32, count=len(arr) + 1, offset=arr.offset * 4)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets).astype(np.int64)
    width = int(lengths.max(initial=1)) if max_len is None else max_len
    lengths = np.minimum(lengths, width)
    rows = np.repeat(np.arange(len(arr)), lengths)
    starts = np.repeat(offsets[:-1].astype(np.int64), lengths)
    cols = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = np.zeros((len(arr), max(width, 1)), dtype=np.uint8)
    tokens[rows, cols] = _BYTE_TO_INDEX[data[starts + cols]]
    return torch.from_numpy(tokens), torch.from_numpy(lengths)


def lowercase_framed(tokens: torch.Tensor, lengths: torch.Tensor, order: int) -> torch.Tensor:
    """(B, order - 1 + T + 1) symbols: `order - 1` begin markers, the lowercased name, an end marker,
    padding after it: what n-grams of up to `order` symbols are read from."""
    t = tokens.long()
    t = torch.where((t >= _UPPER_FIRST) & (t <= _UPPER_LAST), t - (_UPPER_FIRST - 1), t)
    batch, width = t.shape
    framed = torch.full((batch, order - 1 + width + 1), PAD, dtype=torch.long, device=t.device)
    framed[:, :order - 1] = BOS
    framed[:, order - 1:order - 1 + width] = t
    framed.scatter_(1, (lengths.to(t.device).clamp(max=width) + order - 1)[:, None], EOS)
    return framed


def letters_beyond_ascii(names: pa.Array | pa.ChunkedArray | list[str]) -> list[str]:
    """Per name, its distinct non-ASCII letters, lowercased (İ, which has no one-letter lower case,
    is kept) and composed (NFC), in code-point order:
    what the notebook's ASCII folding loses ("Jäger" and "Jager" both become "Jager"), for
    `pipeline.marks`. Only the rare non-ASCII names are looked at one by one."""
    if isinstance(names, list):  # a few names to predict: str.isascii, not an Arrow array, per call
        texts = [(i, name) for i, name in enumerate(names) if isinstance(name, str) and not name.isascii()]
    else:
        arr = pc.fill_null(names, "")
        texts = [(i, arr[i].as_py()) for i in np.flatnonzero(~pc.string_is_ascii(arr).to_numpy(zero_copy_only=False))]
    found = [""] * len(names)
    for i, text in texts:
        # per letter: str.lower() turns "İ" into "i" and a combining dot, which would drop the letter
        folded = [c if len(c.lower()) > 1 else c.lower() for c in unicodedata.normalize("NFC", text)]
        found[int(i)] = "".join(sorted({c for c in folded if ord(c) > 127 and c.isalpha()}))
    return found


def encode_marks(letters: list[str]) -> torch.Tensor:
    """(n, widest) int32 code points of each row's letters (`letters_beyond_ascii`), 0 after them."""
    width = max((len(x) for x in letters), default=0)
    codes = np.zeros((len(letters), width), dtype=np.int32)
    for i, text in enumerate(letters):
        if text:
            codes[i, :len(text)] = [ord(c) for c in text]
    return torch.from_numpy(codes)


def _cut(n: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    """Boundaries of train / validation / test among n shuffled items: the fractions' shares (train's
    and validation's rounded, test the rest), except that a stratum of few items is first learnt, then
    tested, then validated: each side asked for gets one item, while there are items, before another
    keeps more than its share (1 item: train; 2: train, test; 3: one each)."""
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    sizes = [n_train, n_val, n - n_train - n_val]
    floors, left = [0, 0, 0], n
    for side in (TRAIN, TEST, VALIDATION):
        if fractions[side] > 0 and left:
            floors[side], left = 1, left - 1
    for side in (TRAIN, TEST, VALIDATION):
        while sizes[side] < floors[side]:  # one from the side that can best spare it
            donor = max(range(3), key=lambda i: sizes[i] - floors[i])
            sizes[donor], sizes[side] = sizes[donor] - 1, sizes[side] + 1
    return sizes[TRAIN], sizes[TRAIN] + sizes[VALIDATION]


def split_by_name(name_ascii: np.ndarray, language: np.ndarray, config: SplitConfig) -> np.ndarray:
    """Seeded split stratified by language in which every copy of a name lands on the same side.

    Hand-written because scikit-learn offers stratified *group* splitting only as k-fold
    (StratifiedGroupKFold), which cannot express arbitrary fractions like 70/15/15.
    A name carried by several languages is stratified under its rarest one; names are one name by
    `name_key` (case aside).
    """
    fractions = (config.train, config.validation, config.test)
    # keyed as Python strings: a fixed-width copy (np.char) of a million names would take 256 MB
    keys = np.asarray([name_key(name) for name in name_ascii.tolist()], dtype=object)
    distinct, inverse = np.unique(keys, return_inverse=True)
    lang_codes, lang_inverse = np.unique(language, return_inverse=True)
    lang_freq = np.bincount(lang_inverse)
    # stratum of each distinct name: its rarest language (ties by code)
    order = np.lexsort((lang_inverse, lang_freq[lang_inverse]))
    stratum = np.full(len(distinct), -1, dtype=np.int64)
    first = np.unique(inverse[order], return_index=True)[1]
    stratum[inverse[order][first]] = lang_inverse[order][first]
    rng = np.random.default_rng(config.seed)
    side = np.empty(len(distinct), dtype=np.int8)
    for code in range(len(lang_codes)):
        members = np.flatnonzero(stratum == code)
        members = members[rng.permutation(len(members))]
        a, b = _cut(len(members), fractions)
        side[members[:a]], side[members[a:b]], side[members[b:]] = TRAIN, VALIDATION, TEST
    return side[inverse]


def split_random_lines(n: int, config: SplitConfig) -> np.ndarray:
    """The notebook's method: a random split of lines (copies of a name may land on both sides)."""
    perm = np.random.default_rng(config.seed).permutation(n)
    a, b = _cut(n, (config.train, config.validation, config.test))
    side = np.empty(n, dtype=np.int8)
    side[perm[:a]], side[perm[a:b]], side[perm[b:]] = TRAIN, VALIDATION, TEST
    return side


@dataclass
class TensorData:
    """Everything a model needs, traceable to the table it came from."""

    tokens: torch.Tensor          # (n, max_len) uint8, 0 = padding
    lengths: torch.Tensor         # (n,) int64
    labels: torch.Tensor          # (n,) int64 index into label_names
    split: torch.Tensor           # (n,) int8: 0 train, 1 validation, 2 test
    label_names: list[str]        # sorted
    names: list[str]              # name_ascii of each row (reports, error analysis)
    table_sha256: str
    split_config: dict
    # each row's spelling as written (its name_ascii where no line of it has a non-ASCII letter, else
    # the line with the most of them: "Jäger" for Jager in German.txt), and that spelling's non-ASCII
    # letters as (n, widest) int32 code points, 0-padded (`encode_marks`); both None when the table
    # held no raw spellings (or a tensors file of format 2)
    spellings: list[str] | None = None
    marks: torch.Tensor | None = None

    @functools.cached_property
    def sha256(self) -> str:
        """Content hash (computed once: run keys, tags, cache names and the model card all ask)."""
        h = hashlib.sha256()
        for t in (self.tokens, self.lengths, self.labels, self.split):
            h.update(t.contiguous().numpy().tobytes())
        if self.spellings is not None:
            h.update(b"spellings" + "\n".join(self.spellings).encode())
        h.update(json.dumps([self.label_names, self.table_sha256, self.split_config]).encode())
        return h.hexdigest()

    def indices(self, *sides: int) -> torch.Tensor:
        """Row indices of the given sides, side after side (e.g. train then validation)."""
        return torch.cat([torch.nonzero(self.split == side).flatten() for side in sides])

    def marks_at(self, idx: torch.Tensor) -> torch.Tensor | None:
        """The non-ASCII letters of rows `idx` (None when the data holds no raw spellings)."""
        return None if self.marks is None else self.marks[idx]

    def class_counts(self, *sides: int) -> torch.Tensor:
        """Rows per language on the given sides."""
        return torch.bincount(self.labels[self.indices(*sides)], minlength=len(self.label_names))


def _row_spellings(names: pa.Table, table: pa.Table) -> list[str] | None:
    """The spelling of each row of `table` (one row per distinct name and language, or the names
    table itself): its name_ascii, unless a line of it in `names` has non-ASCII letters, then the
    line with the most ("Jäger" rather than "Jager"). None when `names` holds no raw spelling."""
    if "name" not in names.column_names:
        return None
    if table.num_rows == names.num_rows and "name" in table.column_names:  # every line is a row
        return table["name"].to_pylist()
    raw_letters = letters_beyond_ascii(names["name"])
    spelt: dict[tuple[str, str], tuple[int, str]] = {}  # (name_ascii, language) -> (letters, spelling)
    for i in (i for i, x in enumerate(raw_letters) if x):
        key = (names["name_ascii"][i].as_py(), names["language"][i].as_py())
        if len(raw_letters[i]) > spelt.get(key, (0, ""))[0]:
            spelt[key] = (len(raw_letters[i]), names["name"][i].as_py())
    spellings = table["name_ascii"].to_pylist()
    if spelt:
        keys = list(spelt)
        joined = pc.binary_join_element_wise(table["name_ascii"], table["language"], "\x00")
        at = pc.index_in(joined, value_set=pa.array(["\x00".join(key) for key in keys], type=pa.string()))
        for row in np.flatnonzero(pc.is_valid(at).to_numpy(zero_copy_only=False)).tolist():
            spellings[row] = spelt[keys[at[row].as_py()]][1]
    return spellings


def build_tensors(names: pa.Table, table_sha256: str, config: SplitConfig, *, absent: tuple[str, ...] = ()
                  ) -> TensorData:
    """Encode the names table; `by_name` keeps one row per distinct (name, language) pair. `absent` says
    what of the source the table lacks (an empty file, a language whose every line was rejected), for
    the error when too few languages remain: the table alone cannot name them."""
    if not isinstance(names, pa.Table):
        raise TypeError(f"build_tensors takes the names table as a pyarrow Table (a NamesTable's `.names`), "
                        f"not {type(names).__name__}")
    table = names.select([c for c in ("name", "name_ascii", "language") if c in names.column_names])
    if config.method == "by_name":
        table = table.group_by(["name_ascii", "language"], use_threads=False).aggregate([])
        table = table.sort_by([("language", "ascending"), ("name_ascii", "ascending")])
    if table.num_rows < 3:
        raise NamelangError(f"too few names to split into train / validation / test: {table.num_rows}")
    name_ascii = table["name_ascii"].to_numpy(zero_copy_only=False)
    language = table["language"].to_numpy(zero_copy_only=False)
    label_names = sorted(set(language.tolist()))
    if len(label_names) < 2:
        missing = f" (not in the table: {'; '.join(absent)})" if absent else ""
        raise NamelangError(f"need names in at least two languages to learn to tell them apart, got "
                            f"{len(label_names)}: {label_names}{missing}")
    labels = np.searchsorted(np.asarray(label_names, dtype=object), language)
    if config.method == "by_name":
        split = split_by_name(name_ascii, language, config)
    else:
        split = split_random_lines(len(name_ascii), config)
    if config.test > 0 and not (split == TEST).any():
        raise NamelangError(f"the test split is empty: {table.num_rows} names in {len(label_names)} languages are "
                            "too few to hold some out for an honest test; add names")
    if (unmeasured := _not_held_out(labels, split, label_names, config)) is not None:
        warnings.warn(unmeasured, NamelangWarning, stacklevel=2)
    tokens, lengths = encode_names(table["name_ascii"])
    spellings = _row_spellings(names, table)
    return TensorData(tokens, lengths, torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(split),
                      label_names, name_ascii.tolist(), table_sha256, config.model_dump(), spellings,
                      None if spellings is None else encode_marks(letters_beyond_ascii(spellings)))


def _not_held_out(labels: np.ndarray, split: np.ndarray, label_names: list[str], config: SplitConfig) -> str | None:
    """Which languages have too few names for the test or validation side, said in one line: the test
    scores (and the gate's judgement) leave them out, and early stopping does not see them."""
    wanted = [(TEST, "test", config.test), (VALIDATION, "validate", config.validation)]
    # rows per (language, side), in one pass
    counts = np.bincount(labels * 3 + split, minlength=3 * len(label_names)).reshape(len(label_names), 3)
    found = []
    for language, per_side in zip(label_names, counts.tolist(), strict=True):
        missing = [word for side, word, fraction in wanted if fraction > 0 and not per_side[side]]
        if missing:
            total = sum(per_side)
            found.append(f"{language} ({total} name{'' if total == 1 else 's'}: none to {' or '.join(missing)})")
    if not found:
        return None
    return (f"too few names to hold some out for {', '.join(found)}: the test scores and the gate leave out a "
            "language with no test names, early stopping one with no validation names; add names")


def languages_not_held_out(data: TensorData) -> str | None:
    """The few-names warning of `build_tensors`, again from built tensors: a run whose tensors come
    from a cache says it too."""
    return _not_held_out(data.labels.numpy(), data.split.numpy(), data.label_names,
                         SplitConfig.model_validate(data.split_config))


# 2: names as one newline-joined ASCII byte tensor (format 1 pickled a list); 3: each row's spelling (UTF-8,
# newline-joined) and its non-ASCII letters
TENSORS_FORMAT = 3


def save_tensors(data: TensorData, path: str | Path) -> Path:
    """One file, written atomically; names travel as bytes, a list of a million strings is slow to unpickle."""
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}  # not the cached hash
    fields["names"] = _as_bytes("\n".join(data.names).encode("ascii"))
    if data.spellings is not None:  # only where a spelling is not its ASCII name: a few rows in a hundred
        differ = np.flatnonzero(np.asarray(data.spellings, dtype=object) != np.asarray(data.names, dtype=object))
        fields["spellings"] = {"rows": torch.from_numpy(differ.astype(np.int64)),
                               "text": _as_bytes("\n".join(data.spellings[i] for i in differ).encode("utf-8"))}
    return save_torch_file({**fields, "format": TENSORS_FORMAT}, path)


def load_tensors(path: str | Path) -> TensorData:
    path = Path(path)
    raw = load_torch_file(path, "tensors file", "; build it from the names table")
    version = raw.pop("format", None) if isinstance(raw, dict) else None
    if version not in (1, 2, TENSORS_FORMAT):
        raise NamelangError(f"tensors file has unknown format {version!r}; rebuild it", path)
    try:
        return _tensor_data(raw, version)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # maybe another version's, maybe our bug
        raise NamelangError(f"tensors file does not fit this version of namelang ({typed_first_line(exc)}); "
                            "rebuild it", path) from exc


def _tensor_data(raw: dict, version: int) -> TensorData:
    if version >= 2:
        blob = raw["names"].numpy().tobytes().decode("ascii")
        raw["names"] = blob.split("\n") if len(raw["labels"]) else []
    if raw.get("spellings") is not None:
        spellings, rows = list(raw["names"]), raw["spellings"]["rows"].tolist()
        text = raw["spellings"]["text"].numpy().tobytes().decode("utf-8").split("\n") if rows else []
        for row, spelling in zip(rows, text, strict=True):
            spellings[row] = spelling
        raw["spellings"] = spellings
    return TensorData(**raw)


def _as_bytes(blob: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8) if blob else torch.zeros(0, dtype=torch.uint8)
