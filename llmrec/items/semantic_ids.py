"""The semantic-ID table: item id <-> code tuple <-> SID tokens, a prefix trie, save/load.

Codes have ``levels + 1`` columns: the quantizer's levels, then a disambiguation level sized to the largest
group of items that share all quantized codes (its value is the item's rank in that group, catalogue order).
So every item has a unique ID, always. Tokens are ``<a_12><b_7><c_200><d_0>``: one letter per level.

For the LLM: ``token_strings()`` is the whole SID vocabulary in a fixed, level-major order (level a codes
0..K-1, then level b, ...), ``token_indices()`` gives each item's rows in that list, ``codebook_vectors()``
one vector per token in the same order (for initialising new embedding rows), and ``trie`` answers
"which codes may come next" for constrained decoding.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llmrec.config import Config
from llmrec.errors import ConfigError, DataError
from llmrec.items.quantizers import Quantizer, load_quantizer, prefix_keys
from llmrec.items.trie import SidTrie, check_codes

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
LETTERS = "abcdefghijklmnopqrstuvwxyz"
_TOKEN_RE = re.compile(r"<([a-z])_(\d+)>")


def disambiguate(quantized: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Rank of each item among the items sharing its quantized codes (0 for the first in row order)."""
    if quantized.shape[1] == 0:
        return np.arange(len(quantized), dtype=np.int64)
    keys = prefix_keys(quantized, tuple(sizes))
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - group_start
    return rank


def collision_rate(quantized: np.ndarray) -> float:
    """Share of items that lose their identity without the extra level: 1 - distinct tuples / items."""
    if len(quantized) == 0:
        return 0.0
    return float(1.0 - len(np.unique(quantized, axis=0)) / len(quantized))


class SemanticIds:
    """Bidirectional item <-> semantic-ID table. Build with ``from_quantized`` or ``build_semantic_ids``."""

    def __init__(
        self,
        item_ids: Sequence[str],
        codes: np.ndarray,
        codebook_sizes: Sequence[int],
        config: Mapping[str, Any] | None = None,
        codebooks: Sequence[np.ndarray] | None = None,
        quantizer: Quantizer | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.item_ids = [str(i) for i in item_ids]
        self.codebook_sizes = tuple(int(s) for s in codebook_sizes)
        if len(self.codebook_sizes) < 1 or len(self.codebook_sizes) > len(LETTERS):
            raise ConfigError(f"a table needs 1..{len(LETTERS)} levels, got {len(self.codebook_sizes)}")
        self.codes = check_codes(codes, self.codebook_sizes)
        if len(self.codes) != len(self.item_ids):
            raise DataError(f"{len(self.item_ids)} item ids but {len(self.codes)} code rows", field="codes")
        self._index = {item_id: row for row, item_id in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            counts = Counter(self.item_ids)  # not list.count per id: quadratic at a million items
            dup = next(i for i in self.item_ids if counts[i] > 1)
            raise DataError("duplicate item id in the table", record=dup, field="item_id")
        if len(np.unique(prefix_keys(self.codes, self.codebook_sizes))) != len(self.codes):
            raise DataError("two items share a full semantic ID; the table must be unique", field="codes")
        self.config = dict(config or {})
        self.codebooks = [np.asarray(c, dtype=np.float32) for c in (codebooks or [])]
        self.quantizer = quantizer
        self.meta = dict(meta or {})

    # -- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_quantized(
        cls,
        item_ids: Sequence[str],
        quantized: np.ndarray,
        codebook_sizes: Sequence[int],
        *,
        config: Mapping[str, Any] | None = None,
        quantizer: Quantizer | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> SemanticIds:
        """Append the disambiguation level to quantizer codes ``[n, levels]`` and build the table."""
        if len(item_ids) == 0:
            raise DataError("cannot build semantic IDs for an empty catalogue", field="items")
        quantized = check_codes(quantized, codebook_sizes, "quantized codes")
        extra = disambiguate(quantized, codebook_sizes)
        codes = np.column_stack([quantized, extra])
        sizes = (*codebook_sizes, int(extra.max()) + 1)
        info = {"collision_rate": collision_rate(quantized), **(meta or {})}
        books = quantizer.code_vectors() if quantizer is not None else None
        return cls(item_ids, codes, sizes, config=config, codebooks=books, quantizer=quantizer, meta=info)

    # -- lookups ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def levels(self) -> int:
        """Number of code levels, disambiguation level included."""
        return len(self.codebook_sizes)

    @property
    def collision_rate(self) -> float:
        """Collision rate of the quantizer's codes before the disambiguation level was added."""
        return float(self.meta.get("collision_rate", collision_rate(self.codes[:, :-1])))

    @property
    def unique_fraction(self) -> float:
        return float(len(np.unique(prefix_keys(self.codes, self.codebook_sizes))) / max(1, len(self.codes)))

    @staticmethod
    def token(level: int, code: int) -> str:
        return f"<{LETTERS[level]}_{int(code)}>"

    def token_offsets(self) -> np.ndarray:
        """``[levels + 1]``: level l's tokens are ``token_strings()[offsets[l]:offsets[l+1]]``."""
        return np.concatenate([[0], np.cumsum(self.codebook_sizes)]).astype(np.int64)

    def token_strings(self) -> list[str]:
        """The whole SID vocabulary, level-major; a grown last level only appends tokens."""
        return [self.token(level, code) for level, size in enumerate(self.codebook_sizes) for code in range(size)]

    def token_indices(self) -> np.ndarray:
        """``[n_items, levels]`` positions of each item's tokens in ``token_strings()``."""
        return self.codes + self.token_offsets()[:-1]

    def row(self, item_id: str) -> int:
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise DataError("item is not in the semantic-ID table", record=str(item_id), field="item_id") from None

    def codes_for(self, item_id: str) -> tuple[int, ...]:
        return tuple(int(c) for c in self.codes[self.row(item_id)])

    def tokens_for(self, item_id: str) -> list[str]:
        return [self.token(level, code) for level, code in enumerate(self.codes_for(item_id))]

    def sid_string(self, item_id: str) -> str:
        """``"<a_12><b_7><c_200><d_0>"``."""
        return "".join(self.tokens_for(item_id))

    def item_for_codes(self, codes: Sequence[int]) -> str | None:
        row = self.trie.row(tuple(codes))
        return None if row is None else self.item_ids[row]

    def parse(self, text: str) -> tuple[int, ...] | None:
        """Codes from generated text such as ``"<a_1><b_2><c_3><d_0>"``; ``None`` unless exactly one valid ID."""
        found = _TOKEN_RE.findall(text)
        if len(found) != self.levels or any(letter != LETTERS[i] for i, (letter, _) in enumerate(found)):
            return None
        codes = tuple(int(code) for _, code in found)
        return codes if self.trie.is_item(codes) else None

    def item_for_string(self, text: str) -> str | None:
        codes = self.parse(text)
        return None if codes is None else self.item_for_codes(codes)

    @cached_property
    def trie(self) -> SidTrie:
        """Prefix trie of every valid ID (built on first use, then cached)."""
        return SidTrie(self.codes, self.codebook_sizes)

    # -- LLM token initialisation -------------------------------------------------------------------------------

    def codebook_vectors(self, normalize: bool = False, seed: int = 0) -> np.ndarray:
        """One vector per SID token, in ``token_strings()`` order, in the quantizer's space.

        Residual k-means: input-space centroids (level a) and residual centroids (deeper levels, smaller norm).
        RQ-VAE: latent codebooks. Disambiguation level: small fixed random vectors (seeded; a grown level keeps
        its earlier rows) at half the median norm of the last codebook, since the level carries no meaning.
        ``normalize`` L2-normalises every row. Project to the LLM's hidden size before use.
        """
        if len(self.codebooks) != self.levels - 1:
            raise ConfigError("this table has no codebooks (it was built from raw codes); pass them or rebuild")
        dim = self.codebooks[0].shape[1]
        last = self.codebooks[-1] if self.codebooks else np.ones((1, dim), dtype=np.float32)
        scale = 0.5 * float(np.median(np.linalg.norm(last, axis=1))) or 1.0
        extra = np.random.default_rng(seed).standard_normal((self.codebook_sizes[-1], dim)).astype(np.float32)
        extra *= scale / np.linalg.norm(extra, axis=1, keepdims=True)
        out = np.concatenate([*self.codebooks, extra]).astype(np.float32)
        if normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    # -- growing the table --------------------------------------------------------------------------------------

    def add_items(self, new_ids: Sequence[str], vectors: np.ndarray, quantizer: Quantizer | None = None) -> SemanticIds:
        """A new table with ``new_ids`` appended (encode + assign, no retraining); existing IDs are unchanged.

        The last quantized level avoids codes already taken under the same prefix (when collision-aware), and the
        disambiguation level grows if a group outgrows it (new tokens are appended to ``token_strings()``).
        """
        quantizer = quantizer or self.quantizer
        if quantizer is None:
            raise ConfigError("add_items needs the quantizer that built the table (none attached or given)")
        new_ids = [str(i) for i in new_ids]
        if len(new_ids) != len(np.asarray(vectors)):
            raise DataError(f"{len(new_ids)} new ids but {len(np.asarray(vectors))} vectors", field="vectors")
        seen = set(self._index)
        for item_id in new_ids:
            if item_id in seen:
                raise DataError("item id already in the table", record=item_id, field="item_id")
            seen.add(item_id)
        if tuple(quantizer.codebook_sizes) != self.codebook_sizes[:-1]:
            raise ConfigError(f"quantizer sizes {quantizer.codebook_sizes} do not match {self.codebook_sizes[:-1]}")
        old_q = self.codes[:, :-1]
        taken: dict[int, set[int]] = {}
        for p, c in zip(prefix_keys(old_q[:, :-1], self.codebook_sizes[:-2]), old_q[:, -1], strict=True):
            taken.setdefault(int(p), set()).add(int(c))
        new_q = quantizer.encode(vectors, taken=taken)
        quantized = np.concatenate([old_q, new_q])
        extra = np.zeros(len(quantized), dtype=np.int64)
        # Keep existing disambiguation values; new items take the next free value in their group.
        keys = prefix_keys(quantized, self.codebook_sizes[:-1])
        used: dict[int, set[int]] = {}
        for k, d in zip(keys[: len(old_q)], self.codes[:, -1], strict=True):
            used.setdefault(int(k), set()).add(int(d))
        for i in range(len(old_q), len(quantized)):
            group = used.setdefault(int(keys[i]), set())
            d = next(v for v in range(len(group) + 1) if v not in group)
            group.add(d)
            extra[i] = d
        extra[: len(old_q)] = self.codes[:, -1]
        codes = np.column_stack([quantized, extra])
        sizes = (*self.codebook_sizes[:-1], max(self.codebook_sizes[-1], int(extra.max()) + 1))
        meta = {**self.meta, "collision_rate": collision_rate(quantized),
                "added_items": int(self.meta.get("added_items", 0)) + len(new_ids)}
        return SemanticIds(self.item_ids + new_ids, codes, sizes, config=self.config, codebooks=self.codebooks,
                           quantizer=quantizer, meta=meta)

    # -- persistence ----------------------------------------------------------------------------------------------

    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``semantic_ids.safetensors`` + ``semantic_ids.json`` + ``config.json`` (+ the quantizer), atomically.
        A previous table at ``directory`` is replaced; an existing file or a non-empty folder that is not a table
        is refused unless ``overwrite``."""
        from safetensors.numpy import save_file

        from llmrec.io import atomic_dir, guard_output, write_json_atomic

        directory = Path(directory)
        guard_output(directory, overwrite=overwrite, ours=is_sid_table)
        with atomic_dir(directory) as tmp:
            tensors = {"codes": np.ascontiguousarray(self.codes)}
            tensors.update({f"codebook.{i}": np.ascontiguousarray(c) for i, c in enumerate(self.codebooks)})
            save_file(tensors, str(tmp / TABLE_WEIGHTS))
            write_json_atomic(tmp / TABLE_FILE, {
                "format_version": FORMAT_VERSION, "levels": self.levels, "codebook_sizes": list(self.codebook_sizes),
                "token_format": "<{letter}_{code}>", "meta": self.meta, "item_ids": self.item_ids,
            })
            write_json_atomic(tmp / "config.json", self.config)
            if self.quantizer is not None:
                self.quantizer.save(tmp)
        return directory

    @classmethod
    def load(cls, directory: str | Path, expected_config: Config | Mapping[str, Any] | None = None) -> SemanticIds:
        """Load a saved table; with ``expected_config``, refuse one built with a different config. A missing,
        truncated or wrong-shaped file is a DataError naming the file (and the field)."""
        from safetensors.numpy import load_file

        from llmrec.filecheck import read_json, safetensors_problem

        directory = Path(directory)
        meta_path, config_path = directory / TABLE_FILE, directory / "config.json"
        try:
            meta = read_json(meta_path, fix=REBUILD)
            config = read_json(config_path, fix=REBUILD)
        except ConfigError as exc:
            raise DataError(f"not a semantic-ID table: {exc}", path=directory) from exc
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"unsupported format_version {meta.get('format_version')!r}", path=meta_path,
                            field="format_version")
        levels, sizes, item_ids = _table_fields(meta, meta_path)
        if expected_config is not None:
            expected = expected_config.to_dict() if isinstance(expected_config, Config) else dict(expected_config)
            diffs = _diff(json.loads(json.dumps(expected)), config)
            if diffs:
                shown = "; ".join(f"{k}: saved {s!r}, expected {e!r}" for k, s, e in diffs[:5])
                raise ConfigError(f"{config_path}: semantic-ID table was built with a different config ({shown})")
        weights = directory / TABLE_WEIGHTS
        problem = safetensors_problem(weights)
        if problem is not None:
            raise DataError(f"{problem}; {REBUILD}", path=weights)
        tensors = load_file(str(weights))
        if "codes" not in tensors:
            raise DataError(f"no 'codes' tensor; {REBUILD}", path=weights, field="codes")
        books = [tensors[f"codebook.{i}"] for i in range(levels - 1) if f"codebook.{i}" in tensors]
        quantizer = _load_quantizer(directory) if (directory / "quantizer.json").exists() else None
        meta_extra = meta.get("meta", {})
        try:
            return cls(item_ids, tensors["codes"], sizes, config=config, codebooks=books, quantizer=quantizer,
                       meta=meta_extra if isinstance(meta_extra, dict) else {})
        except (DataError, ConfigError) as exc:  # codes that do not fit the table's sizes or ids
            raise DataError(f"the table does not hold together ({exc}); {REBUILD}", path=weights) from exc


TABLE_FILE = "semantic_ids.json"
TABLE_WEIGHTS = "semantic_ids.safetensors"
REBUILD = "rebuild the table with `llmrec items build --out DIR`"


def _load_quantizer(directory: Path) -> Quantizer:
    from llmrec.filecheck import safetensors_problem

    weights = directory / "quantizer.safetensors"
    problem = safetensors_problem(weights)
    if problem is not None:
        raise DataError(f"{problem}; {REBUILD}", path=weights)
    try:
        return load_quantizer(directory)
    except (DataError, ConfigError):
        raise
    except (KeyError, TypeError, ValueError) as exc:  # a quantizer.json of another shape
        raise DataError(f"the saved quantizer does not load ({type(exc).__name__}: {exc}); {REBUILD}",
                        path=directory / "quantizer.json") from exc


def is_sid_table(directory: str | Path) -> bool:
    """Whether ``directory`` holds a table written by :meth:`SemanticIds.save` (``llmrec items build``)."""
    directory = Path(directory)
    return (directory / TABLE_FILE).is_file() and (directory / TABLE_WEIGHTS).is_file()


def _table_fields(meta: dict[str, Any], path: Path) -> tuple[int, list[int], list[str]]:
    """``levels``, ``codebook_sizes`` and ``item_ids`` of a table's JSON, each checked for shape."""
    levels, sizes, item_ids = meta.get("levels"), meta.get("codebook_sizes"), meta.get("item_ids")
    if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= len(LETTERS):
        raise DataError(f"expected an integer 1..{len(LETTERS)}, got {levels!r}; {REBUILD}", path=path,
                        field="levels")
    if (not isinstance(sizes, list) or len(sizes) != levels
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise DataError(f"expected a list of {levels} positive integers, got {str(sizes)[:80]}; {REBUILD}", path=path,
                        field="codebook_sizes")
    if not isinstance(item_ids, list) or not all(isinstance(i, (str, int)) and not isinstance(i, bool)
                                                 for i in item_ids):
        raise DataError(f"expected a list of item ids, got {str(item_ids)[:80]}; {REBUILD}", path=path,
                        field="item_ids")
    return levels, sizes, [str(i) for i in item_ids]


def _diff(expected: Any, saved: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(expected, dict) and isinstance(saved, dict):
        out = []
        for key in sorted(set(expected) | set(saved)):
            out += _diff(expected.get(key), saved.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if expected == saved else [(path, saved, expected)]
