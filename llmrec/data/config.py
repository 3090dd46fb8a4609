"""``DatasetConfig``: one YAML or JSON file that says where a dataset's files are and how to read them.

```yaml
name: bookshop
format: generic                 # or movielens, recbole, amazon2014, amazon2018, amazon2023, lamp
interactions: orders.csv        # paths are relative to this file's folder
items: books.jsonl
columns: {user_id: customer_id, item_id: isbn, timestamp: ts, rating: stars}
timestamp_format: iso           # auto | seconds | milliseconds | iso | a strftime format
rating_range: [1, 5]
category: category              # item attribute(s) that play "category"; a string or a list
vocabulary: {item: book, items: books, interacted: bought}
min_user_interactions: 5        # filters; their effect is logged and kept in InteractionData.filter_report
```
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from llmrec.config import Config
from llmrec.data.schema import Vocabulary
from llmrec.data.timestamps import check_timestamp_format
from llmrec.errors import ConfigError

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
_PATH_FIELDS = ("path", "items", "interactions", "users", "outputs")
_VOCABULARY_KEYS = tuple(f.name for f in dataclasses.fields(Vocabulary))
# Item-text values that name a template file (resolved against the config folder like the data paths).
_TEMPLATE_SUFFIXES = (".jinja", ".j2", ".jinja2")


@dataclasses.dataclass
class DatasetConfig(Config):
    """Where a dataset's files are and how to read them (see the module docstring for an example).

    ``format``: a built-in reader (``llmrec.data.formats.FORMATS``) or ``generic`` (any record files).
    ``path``: a folder, for folder formats (``movielens``: any MovieLens release; ``recbole``: atomic files).
    ``items`` / ``interactions`` / ``users``: files (``.jsonl``/``.json``/``.csv``/``.tsv``, each optionally
    ``.gz``; ``.parquet``; a ``datasets.save_to_disk`` folder; or ``hf:owner/name[:config][@split]``).
    ``outputs``: LaMP golds file (``lamp`` only; ``interactions`` is then the questions file).
    ``columns``: our field -> the file's column (``user_id``, ``item_id``, ``timestamp``, ``rating``,
    ``text``, ``title``); any other key renames an item attribute (``topic: category``). A named column the
    file lacks is an error.
    ``timestamp_format``: ``auto`` (epoch numbers, milliseconds when > 1e11, else ISO-8601), ``seconds``,
    ``milliseconds``, ``iso`` (dates and datetimes, with or without zone; no zone = UTC) or a strftime format.
    ``rating_range``: the rating scale ``[low, high]``; a rating outside it is an error. ``None``: the
    format's own scale (unchecked for ``generic``).
    ``item_text``: the item text template for semantic IDs: inline Jinja, a prompt name, or a ``.jinja`` file.
    ``category``: the item attribute(s) that play "category" (a string or a list); ``None``: the format's
    default; ``[]``: no categories. ``category_separator`` splits string values (``"Fantasy|Crime"``).
    ``vocabulary``: the dataset's nouns (item, items, interacted, category, categories).
    ``drop_incomplete``: skip catalogue records without a title and interactions with items not in the
    catalogue (common in Amazon downloads) instead of failing; both counts are logged and reported.
    ``min_user_interactions`` / ``min_item_interactions``: drop users / items with fewer interactions (one
    pass, users first); ``k_core``: repeat both with this threshold until nothing changes. Reported, never
    silent.
    """

    name: str = ""
    format: str = "generic"
    path: str | None = None
    items: str | None = None
    interactions: str | None = None
    users: str | None = None
    outputs: str | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    timestamp_format: str = "auto"
    rating_range: tuple[float, float] | None = None
    item_text: str | None = None
    category: str | list[str] | None = None
    category_separator: str | None = None
    vocabulary: dict[str, str] = dataclasses.field(default_factory=dict)
    drop_incomplete: bool = False
    min_user_interactions: int = 0
    min_item_interactions: int = 0
    k_core: int = 0

    def __post_init__(self) -> None:
        from llmrec.data.formats import FORMATS

        if self.format not in FORMATS:
            raise ConfigError(f"dataset format must be one of {sorted(FORMATS)}, got {self.format!r}")
        for key in _PATH_FIELDS + ("name", "item_text", "category_separator"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"dataset {key}: expected text, got {type(value).__name__} ({value!r})")
        if not isinstance(self.columns, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.columns.items()
        ):
            raise ConfigError(f"dataset columns: expected a mapping of field -> column name, got {self.columns!r}")
        try:
            check_timestamp_format(self.timestamp_format)
        except ValueError as exc:
            raise ConfigError(f"dataset {exc}") from None
        if self.rating_range is not None:
            if len(self.rating_range) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.rating_range
            ):
                raise ConfigError(f"dataset rating_range: expected [low, high], got {list(self.rating_range)}")
            self.rating_range = (float(self.rating_range[0]), float(self.rating_range[1]))
            if self.rating_range[0] >= self.rating_range[1]:
                raise ConfigError(f"dataset rating_range: low must be below high, got {list(self.rating_range)}")
        category = self.category
        if isinstance(category, tuple):
            self.category = category = list(category)
        if category is not None and not isinstance(category, str) and not (
            isinstance(category, list) and all(isinstance(c, str) and c for c in category)
        ):
            raise ConfigError(f"dataset category: expected an attribute name or a list of them, got {category!r}")
        if self.category_separator == "":
            raise ConfigError("dataset category_separator: must not be empty (leave it out to keep values whole)")
        if not isinstance(self.vocabulary, dict):
            raise ConfigError(f"dataset vocabulary: expected a mapping, got {type(self.vocabulary).__name__}")
        unknown = sorted(set(self.vocabulary) - set(_VOCABULARY_KEYS))
        if unknown or not all(isinstance(v, str) and v.strip() for v in self.vocabulary.values()):
            raise ConfigError(f"dataset vocabulary: keys must be among {list(_VOCABULARY_KEYS)} with text "
                              f"values, got {self.vocabulary!r}")
        for key in ("min_user_interactions", "min_item_interactions", "k_core"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"dataset {key}: expected a whole number >= 0, got {value!r}")
        FORMATS[self.format].check(self)

    def check_complete(self) -> None:
        """The files the format needs are named (a bare ``DatasetConfig()`` is valid until it is loaded)."""
        from llmrec.data.formats import FORMATS

        FORMATS[self.format].check_complete(self)

    # ------------------------------------------------------------ derived views

    @property
    def category_fields(self) -> tuple[str, ...] | None:
        """The category attribute(s) as a tuple; ``None`` when the format's default applies."""
        if self.category is None:
            return None
        return (self.category,) if isinstance(self.category, str) else tuple(self.category)

    def make_vocabulary(self, default: Vocabulary | None = None) -> Vocabulary:
        """The format's default nouns with this config's overrides."""
        return dataclasses.replace(default or Vocabulary(), **self.vocabulary)

    def item_text_template(self) -> str | None:
        """``item_text`` in the form ``llmrec.items.encoders.load_template`` takes: a file path or Jinja text.

        A bare name (``item_text``, ``book_text``) is looked up among the prompt templates.
        """
        text = self.item_text
        if text is None or "{{" in text or "{%" in text or text.endswith(_TEMPLATE_SUFFIXES):
            return text
        from llmrec.prompting import load_template_source

        return load_template_source(text)[1]

    # ------------------------------------------------------------ files

    @classmethod
    def from_file(cls, path: str | Path) -> DatasetConfig:
        """Read a ``.yaml``/``.yml``/``.json`` file; relative paths in it resolve against its folder."""
        path = Path(path)
        if path.suffix.lower() not in CONFIG_SUFFIXES:
            raise ConfigError(f"{path}: a dataset config must be .yaml, .yml or .json")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not valid UTF-8 at byte {exc.start}; re-save the config as UTF-8") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read dataset config: {exc.strerror or exc}") from None
        data = _parse(text, path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of dataset settings, got {type(data).__name__}")
        data.setdefault("name", path.stem)
        try:
            cfg = cls.from_dict(data, source=str(path)).resolved(path.parent)
            cfg.check_complete()
            return cfg
        except ConfigError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: {exc}") from None

    def resolved(self, base: str | Path) -> DatasetConfig:
        """A copy whose relative file paths are absolute, taken against ``base``."""
        base = Path(base).resolve()
        changes: dict[str, Any] = {}
        for key in _PATH_FIELDS:
            value = getattr(self, key)
            if value is not None and not value.startswith("hf:") and not Path(value).is_absolute():
                changes[key] = str(base / value)
        if self.item_text and self.item_text.endswith(_TEMPLATE_SUFFIXES) and not Path(self.item_text).is_absolute():
            if (base / self.item_text).is_file():
                changes["item_text"] = str(base / self.item_text)
        return dataclasses.replace(self, **changes) if changes else self

    def save(self, path: str | Path) -> None:
        """JSON or YAML by suffix (atomic)."""
        path = Path(path)
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            from llmrec.io import write_text_atomic

            write_text_atomic(path, yaml.safe_dump(_plain(self.to_dict()), sort_keys=False))
        else:
            super().save(path)


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        except ValueError as exc:  # an integer over Python's digit limit
            raise ConfigError(f"{path}: unreadable JSON: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{path}: JSON nested too deeply") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
