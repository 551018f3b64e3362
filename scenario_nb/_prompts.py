"""Where a sent body holds its prompt, when the model's schema is not at hand (history rows, the panel's snippet).

A model's schema flags its prompt input (`prompt: true`, contract §4.4): most call it `prompt`, Scenario's LLM
`instruction`.
"""

from __future__ import annotations

PROMPT_KEYS = ("prompt", "instruction")  # the prompt inputs of the catalog's models


def prompt_key(body: dict) -> str:
    """Which key of a sent body holds its prompt."""
    return next((k for k in PROMPT_KEYS if k in body), "prompt")


def prompt_of(body: dict) -> str:
    return str(body.get(prompt_key(body), ""))
