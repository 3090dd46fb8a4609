"""The dataset's own nouns in prompts and questions ("books you bought", "movies you watched").

:class:`~llmrec.data.schema.Vocabulary` holds the nouns and the past-tense verb; questions about the future
("the next book this user will buy") need the verb's base form, derived here from a table of common verbs
(an unknown verb falls back to "interact with", which reads correctly for any item).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmrec.data.schema import Vocabulary

# past tense -> base form; the past tense is what a dataset config writes ("watched", "bought", "listened to")
_BASE_FORMS = {
    "watched": "watch", "bought": "buy", "read": "read", "rated": "rate", "reviewed": "review",
    "purchased": "purchase", "ordered": "order", "listened to": "listen to", "played": "play",
    "visited": "visit", "clicked": "click", "clicked on": "click on", "viewed": "view", "liked": "like",
    "interacted with": "interact with", "borrowed": "borrow", "downloaded": "download", "used": "use",
    "tried": "try", "chose": "choose", "picked": "pick", "ate": "eat", "saw": "see", "streamed": "stream",
    "followed": "follow", "attended": "attend", "booked": "book", "rented": "rent", "installed": "install",
    "selected": "select", "saved": "save", "favorited": "favorite", "favourited": "favourite",
    "starred": "star", "took": "take", "cooked": "cook", "wore": "wear", "enrolled in": "enroll in",
}
FALLBACK_BASE = "interact with"


def base_verb(vocabulary: Vocabulary) -> str:
    """The base form of ``vocabulary.interacted`` ("watched" -> "watch"); an ``interact`` attribute on the
    vocabulary wins; an unknown verb gives "interact with"."""
    explicit = getattr(vocabulary, "interact", None)
    if explicit:
        return str(explicit)
    return _BASE_FORMS.get(vocabulary.interacted.strip().lower(), FALLBACK_BASE)


def third_person(base: str) -> str:
    """"watch" -> "watches", "buy" -> "buys", "listen to" -> "listens to" (the first word is conjugated)."""
    head, sep, rest = base.partition(" ")
    if head.endswith(("s", "sh", "ch", "x", "z", "o")):
        head += "es"
    elif head.endswith("y") and head[-2:-1] not in ("a", "e", "i", "o", "u"):
        head = head[:-1] + "ies"
    else:
        head += "s"
    return head + sep + rest


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class PromptVocab:
    """The nouns as a template sees them (``{{ vocab.items }}``; a dict would not do: Jinja's ``vocab.items``
    finds ``dict.items`` first). ``vocab["item"]`` works too, for Python callers."""

    item: str
    items: str
    interacted: str
    interact: str  # base form: "the next movie this user will watch"
    interacts: str  # third person: "the next movie this user watches"
    category: str
    categories: str
    Item: str  # capitalised, for the start of a sentence
    Items: str
    Interacted: str
    Category: str
    Categories: str

    def __getitem__(self, name: str) -> str:
        return getattr(self, name)


def prompt_vocab(vocabulary: Vocabulary | None = None) -> PromptVocab:
    """The nouns as template variables (``vocab`` in every prompt): ``item``, ``items``, ``interacted`` (past),
    ``interact`` (base form), ``interacts`` (3rd person), ``category``, ``categories``, and capitalised
    ``Item``, ``Items``, ``Interacted``, ``Category``, ``Categories`` for the start of a sentence."""
    v = vocabulary or Vocabulary()
    base = base_verb(v)
    return PromptVocab(item=v.item, items=v.items, interacted=v.interacted, interact=base,
                       interacts=third_person(base), category=v.category, categories=v.categories,
                       Item=_cap(v.item), Items=_cap(v.items), Interacted=_cap(v.interacted),
                       Category=_cap(v.category), Categories=_cap(v.categories))
