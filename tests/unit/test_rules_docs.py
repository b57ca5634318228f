"""docs/rules.md documents every rule type, parameter and default rule, and never drifts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from edge.rules.base import RULE_TYPES

ROOT = Path(__file__).resolve().parents[2]


def _gen() -> ModuleType:
    path = ROOT / "scripts" / "gen_rules_docs.py"
    spec = importlib.util.spec_from_file_location("gen_rules_docs", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_rules_md_matches_the_registry_and_profiles() -> None:
    gen = _gen()
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert gen.replace_block(text, gen.render()) == text, (
        "docs/rules.md is stale: run .venv/bin/python scripts/gen_rules_docs.py"
    )


def test_every_rule_type_and_parameter_is_described() -> None:
    for key, cls in RULE_TYPES.items():
        assert cls.summary, key
        for name, info in cls.Params.model_fields.items():
            assert info.description, f"{key}.{name} has no description"
    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    for key in RULE_TYPES:
        assert f"#### `{key}`" in text
