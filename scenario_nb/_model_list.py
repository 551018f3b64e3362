"""`%scenario models`: a short table, never the whole catalog (~550 public models) unless asked for.

By default your own models, then the public catalog in one line (its size by kind) and how to search it;
`--search`/`--type` give short lists of both, with what each model makes (image, video, 3D, text, LoRA).
"""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.display import display

from ._html import table_bundle
from ._models import MODEL_KINDS, kind_words, model_kind

MODELS_SHOWN = 25  # rows of a model search shown unless --all: a notebook stays light


def show_models(client, *, search: str = "", kind: str = "", public: bool = False, everything: bool = False) -> None:
    """The table `%scenario models` shows (its overview when nothing is searched for)."""
    search, wanted = search.lower(), kind.lower()
    if not (search or wanted or public):
        return show_overview(client)
    found = client.public_models() if public else client.models() + client.public_models()
    if wanted and wanted not in MODEL_KINDS and not any(m.type.lower() == wanted for m in found):
        raise UsageError(f"%scenario models --type: {kind!r} is not a kind of model; one of "
                         f"{', '.join(MODEL_KINDS)} or an API type such as flux.2-dev-lora")
    found = [m for m in found if (not search or search in m.name.lower() or search in m.id.lower())
             and (not wanted or wanted in (model_kind(m), m.type.lower()))]
    if not found:
        print("No models found" + ("" if public else " in your models or the public catalog"))
        return
    shown = found if everything else found[:MODELS_SHOWN]
    _table(shown)
    if len(found) > len(shown):
        print(f"…and {len(found) - len(shown)} more: narrow it with --search or --type, or add --all")


def show_overview(client) -> None:
    """Your own models, then the public catalog in one line and how to search it."""
    own = client.models()
    if own:
        _table(own)
    else:
        print("No models of your own yet (%scenario train NAME --images DIR trains one)")
    catalog = client.public_models()
    counts: dict = {}
    for model in catalog:
        counts[model_kind(model)] = counts.get(model_kind(model), 0) + 1
    mix = ", ".join(f"{n} {'3D' if k == '3d' else k}" for k, n in sorted(counts.items(), key=lambda kn: -kn[1]))
    print(f"Public catalog: {len(catalog)} models anyone can run ({mix}). Find one: %scenario models --search "
          f"flux · by kind: %scenario models --type video (image, video, 3d, text, lora) · all: "
          f"%scenario models --public --all")


def _table(models: list) -> None:
    display(table_bundle(["name", "id", "kind", "status"], [(m.name, m.id, kind_words(m), m.status) for m in models]),
            raw=True)
