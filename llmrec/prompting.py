"""Prompt templates: Jinja2 in a sandbox with StrictUndefined, loaded from ``prompts/`` or given inline.

Templates are untrusted (task files and prompt folders get shared), so beyond Jinja's sandbox: no
``{% include %}`` / ``{% import %}`` / ``{% extends %}`` (refused when the template is compiled, and the
environment has no loader), ``range()`` limited to :data:`MAX_RANGE` items per render, string/list repetition
and powers limited in size, and every failure is one :class:`ConfigError` (or :class:`DataError` for a variable
an example lacks) naming the template.
"""

from __future__ import annotations

import contextvars
import operator
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import FunctionLoader, StrictUndefined, Template, TemplateError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from llmrec.errors import ConfigError, DataError
from llmrec.package_data import data_candidates, prompt_dirs

MAX_RANGE = 10_000  # range() items one render may produce in total (nested loops included)
MAX_SIZE = 1_000_000  # longest string / list a template may build with * (and largest result of **)
_range_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("llmrec_range_budget",
                                                                                 default=None)


def _budget_range(*args: int) -> range:
    rng = range(*args)
    budget = _range_budget.get()
    left = budget[0] if budget is not None else MAX_RANGE
    if len(rng) > left:
        raise SecurityError(f"range() too big: a prompt may loop over at most {MAX_RANGE} numbers in all")
    if budget is not None:
        budget[0] -= len(rng)
    return rng


class PromptEnvironment(SandboxedEnvironment):
    """The sandbox, plus limits on ``*`` and ``**`` (``'x' * 10**10`` would exhaust memory)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and isinstance(left, (int, float)) and abs(right) > 64 \
                    and abs(left) > 1:
                raise SecurityError("power too large in a prompt template")
            return operator.pow(left, right)
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_SIZE:
                raise SecurityError(f"repetition too large in a prompt template (over {MAX_SIZE} items)")
        return operator.mul(left, right)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    # A loader that finds nothing: {% include %} in a template compiled elsewhere is a TemplateNotFound.
    env = PromptEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                            loader=FunctionLoader(lambda name: None))
    env.globals["range"] = _budget_range
    return env


_LOADING_NODES = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "import",
                  nodes.Extends: "extends"}


def compile_template(source: str, label: str) -> Template:
    """Compile Jinja source; a syntax error or an ``{% include %}``/``{% import %}``/``{% extends %}`` (prompts
    must be self-contained) is a ConfigError naming ``label`` (the file)."""
    env = environment()
    try:
        ast = env.parse(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        where = f" at line {line}" if line else ""
        raise ConfigError(f"{label}: template syntax error{where}: {getattr(exc, 'message', None) or exc}") from None
    for kind, word in _LOADING_NODES.items():
        node = next(ast.find_all(kind), None)
        if node is not None:
            raise ConfigError(f"{label}: line {node.lineno}: {{% {word} %}} is not allowed in prompt templates "
                              "(a prompt must be one self-contained file)")
    template = env.from_string(ast)
    template.llmrec_label = label  # for error messages at render time
    return template


def render_template(template: Template, variables: dict[str, Any], record: str | None = None, *,
                    missing_is_data: bool = True) -> str:
    """Render with the limits; a missing variable is a DataError naming the template and ``record`` (a
    ConfigError if not ``missing_is_data``: the variables come from code, so the template is at fault), any
    other failure a ConfigError naming the template."""
    label = getattr(template, "llmrec_label", "<prompt template>")
    token = _range_budget.set([MAX_RANGE])
    try:
        return template.render(**variables)
    except UndefinedError as exc:
        if not missing_is_data:
            raise ConfigError(f"{label}: {exc.message}") from None
        raise DataError(f"prompt needs a variable the example lacks: {exc.message}", path=label,
                        record=record) from None
    except SecurityError as exc:
        raise ConfigError(f"{label}: prompt template tried an unsafe operation: {exc}") from None
    except TemplateError as exc:
        raise ConfigError(f"{label}: {type(exc).__name__}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError, MemoryError) as exc:
        raise ConfigError(f"{label}: the template failed: {type(exc).__name__}: {exc}") from None
    finally:
        _range_budget.reset(token)


def load_template_source(name_or_text: str) -> tuple[str, str]:
    """Resolve ``genrec`` / ``genrec.jinja`` / a path / inline text to ``(label, source)``."""
    is_path = "/" in name_or_text or name_or_text.endswith(".jinja")
    candidates = [Path(name_or_text), *data_candidates(name_or_text)] if is_path else []
    dirs = prompt_dirs()  # $LLMREC_PROMPTS folders first, then the built-in prompts
    candidates += [p for base in dirs for p in (base / name_or_text, base / f"{name_or_text}.jinja")]
    for path in candidates:
        try:
            if path.is_file():
                return str(path), path.read_text(encoding="utf-8")
        except OSError:
            continue
    if "{{" in name_or_text or "{%" in name_or_text:
        return "<inline template>", name_or_text
    raise ConfigError(f"prompt template {name_or_text!r} not found in {', '.join(map(str, dirs))} (and it is not inline Jinja)")


def render(name_or_text: str, **variables: Any) -> str:
    """Render a template; a missing variable is an error naming the template."""
    label, source = load_template_source(name_or_text)
    template = compile_template(source, f"prompt {label}")
    return render_template(template, variables, missing_is_data=False).strip("\n")


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a single-turn chat prompt ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
    return tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
