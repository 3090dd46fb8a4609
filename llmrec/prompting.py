"""Prompt templates: Jinja2 in a sandbox with StrictUndefined, loaded from ``prompts/`` or given inline."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from llmrec.errors import ConfigError
from llmrec.package_data import data_candidates, prompt_dirs


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


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
    try:
        return environment().from_string(source).render(**variables).strip("\n")
    except TemplateError as exc:
        raise ConfigError(f"prompt {label}: {exc}") from exc


def chat_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of a single-turn chat prompt ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
    return tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
