"""`llmrec train sasrec | genrec | genrec-pref | profile-dpo | soft-prompt`: recipes from a config file plus dotted overrides.

    llmrec train genrec --config smollm2-135m/genrec --data shop.yaml --train.lr 1e-3 --out runs/shop-genrec
    llmrec train genrec --help          # every option, its default and its help, from the recipe's dataclasses
    llmrec train configs                # the shipped configs

Only the config dataclasses are imported to build the parser; torch and the models load when a recipe runs.
"""

from __future__ import annotations

import argparse
import importlib

from llmrec.recipes.config import add_config_arguments, config_from_args, shipped_configs, to_yaml

# command -> (module, config class, one-line help)
RECIPES = {
    "sasrec": ("llmrec.recipes.sasrec", "SasrecRecipeConfig", "SASRec next-item encoder (baseline, user encoder)"),
    "genrec": ("llmrec.recipes.genrec", "GenrecRecipeConfig", "generative recommender: LLM + LoRA + semantic IDs"),
    "genrec-pref": ("llmrec.recipes.genrec_pref", "GenrecPrefRecipeConfig",
                    "preference alignment (DPO or GRPO) of a trained generative recommender"),
    "profile-dpo": ("llmrec.recipes.profile_dpo", "ProfileDpoRecipeConfig",
                    "profile-writer alignment (DPO) on what helps a downstream reader"),
    "soft-prompt": ("llmrec.recipes.soft_prompt", "SoftPromptRecipeConfig",
                    "personalized QA from soft-prompt user vectors"),
}


def recipe_of(config_name: str) -> str:
    """The recipe a shipped config belongs to: ``<model>/<recipe>`` (``tiny/genrec``), a variant
    ``<model>/<recipe>_<variant>`` (``smollm2-135m/genrec-pref_grpo``), or ``<recipe>/<name>`` for the recipes
    without an LLM (``sasrec/ml-100k``)."""
    first, _, last = config_name.rpartition("/")
    recipe = last.split("_", 1)[0]
    return recipe if recipe in RECIPES else first.split("/")[0]


def register(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model from a recipe config").add_subparsers(
        dest="command", required=True)
    for name, (module_name, class_name, text) in RECIPES.items():
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        p = train.add_parser(name, help=text, description=(module.__doc__ or "").strip(), allow_abbrev=False,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(p, cls, aliases={"--dataset": "data"})
        p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
        p.set_defaults(func=_run, recipe=name, recipe_module=module, recipe_config=cls)
    p = train.add_parser("configs", help="list the shipped recipe configs (names for --config)")
    p.set_defaults(func=lambda args: print("\n".join(shipped_configs())))


def _run(args: argparse.Namespace) -> int:
    config = config_from_args(args.recipe_config, args)
    if args.print_config:
        print(to_yaml(config), end="")
        return 0
    out = args.recipe_module.run(config)
    print(out)
    return 0
