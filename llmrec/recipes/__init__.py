"""Recipes: `llmrec train sasrec | genrec | soft-prompt` as typed functions `run(config) -> output dir`."""
