"""The registry of dataset formats: name -> reader and the config fields it reads.

Each reader lives beside its format (``movielens.py``, ``recbole.py``, ``amazon.py``, ``lamp.py``,
``generic.py``) and turns a ``DatasetConfig`` into ``InteractionData``; ``load_dataset`` then applies the
config's category / vocabulary overrides and filters, the same for every format.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmrec.errors import ConfigError

if TYPE_CHECKING:
    from llmrec.data.config import DatasetConfig
    from llmrec.data.schema import InteractionData

# Config fields a format may or may not read (the others: name, format, item_text, category, vocabulary and
# the filters apply to every format).
_FORMAT_FIELDS = ("path", "items", "interactions", "users", "outputs", "columns", "timestamp_format",
                  "rating_range", "category_separator", "drop_incomplete")


@dataclasses.dataclass(frozen=True)
class Format:
    name: str
    reader: str  # "module:function", imported when first used so the registry stays cheap to import
    reads: frozenset[str]
    required: tuple[str, ...] = ()
    doc: str = ""

    def read(self, cfg: DatasetConfig) -> InteractionData:
        import importlib

        module, _, func = self.reader.partition(":")
        reader: Callable[[DatasetConfig], InteractionData] = getattr(importlib.import_module(module), func)
        return reader(cfg)

    def check(self, cfg: DatasetConfig) -> None:
        """Fields this format does not read are left unset (never silently ignored)."""
        from llmrec.data.config import DatasetConfig

        defaults = DatasetConfig.__dataclass_fields__
        for key in _FORMAT_FIELDS:
            if key in self.reads:
                continue
            default = defaults[key].default_factory() if callable(defaults[key].default_factory) else defaults[key].default
            if getattr(cfg, key) != default:
                raise ConfigError(f"dataset format {self.name!r} does not use {key!r} (it reads "
                                  f"{sorted(self.reads) or 'nothing but its name'}); remove it")

    def check_complete(self, cfg: DatasetConfig) -> None:
        """The files this format needs are named (checked on reading a config file and before loading)."""
        for key in self.required:
            if not getattr(cfg, key):
                raise ConfigError(f"dataset format {self.name!r} needs {key!r}: {self.doc}")


_RECORDS = frozenset({"items", "interactions", "users", "columns", "timestamp_format", "rating_range",
                      "category_separator", "drop_incomplete"})

FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("generic", "llmrec.data.generic:read_generic", _RECORDS, ("items", "interactions"),
           "items: the catalogue file, interactions: the events file"),
    Format("movielens", "llmrec.data.movielens:read_movielens", frozenset({"path"}), (),
           "path: a MovieLens folder (u.data, ratings.dat, ratings.csv or ml-*.inter layouts)"),
    Format("recbole", "llmrec.data.recbole:read_recbole", frozenset({"path", "columns", "timestamp_format",
                                                                      "rating_range", "category_separator",
                                                                      "drop_incomplete"}),
           ("path",), "path: a folder with <name>.inter and <name>.item (and optionally <name>.user)"),
    Format("amazon2014", "llmrec.data.amazon:read_amazon2014", _RECORDS - {"users"}, ("items", "interactions"),
           "interactions: reviews (JSON lines, .gz ok), items: metadata (asin, title, categories)"),
    Format("amazon2018", "llmrec.data.amazon:read_amazon2018", _RECORDS - {"users"}, ("items", "interactions"),
           "interactions: reviews (JSON lines, .gz ok), items: metadata (asin, title, category)"),
    Format("amazon2023", "llmrec.data.amazon:read_amazon2023", _RECORDS - {"users"}, ("items", "interactions"),
           "interactions: reviews (user_id, parent_asin, rating, timestamp in ms), items: metadata"),
    Format("lamp", "llmrec.data.lamp:read_lamp", frozenset({"interactions", "outputs", "timestamp_format"}),
           ("interactions",), "interactions: a LaMP questions file, outputs: its golds file (optional)"),
)}
