"""Policy files: YAML validation with field paths, the JSON schema, `triage policy validate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from triage.policies.loader import EXAMPLES_DIR, load_policy, save_policy_updates
from triage.router.cli.main import app
from triage.errors import ConfigError

runner = CliRunner()
LOCAL = EXAMPLES_DIR / "local.yaml"


def write(tmp_path: Path, raw: dict, name: str = "p.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw, sort_keys=False))
    return p


def local_raw() -> dict:
    return yaml.safe_load(LOCAL.read_text())


@pytest.mark.parametrize(
    ("mutate", "field", "words"),
    [
        (lambda d: d["rule"]["thresholds"].__setitem__("hard", 1.5), "rule.thresholds.hard", "less than or equal to 1"),
        (lambda d: d["tiers"].__setitem__("hard", "nope"), "tiers.hard", "unknown strategy 'nope'"),
        (lambda d: d["strategies"]["terse"].__setitem__("temprature", 1), "strategies.terse.temprature", "unknown field"),
        (lambda d: d["strategies"]["terse"].__setitem__("on_truncation", "retry"), "strategies.terse.on_truncation",
         "needs retry_max_tokens"),
        (lambda d: d["strategies"]["terse"].__setitem__("template", "no placeholder"), "strategies.terse.template",
         "{query}"),
        (lambda d: d["strategies"]["terse"].__setitem__("extra", {"api_key": "sk-live-123"}),
         "strategies.terse.extra", "api_key_env"),
        (lambda d: d.__setitem__("rule", {"type": "magic"}), "rule", "does not match any of the expected tags"),
        (lambda d: d.__setitem__("rule", {"type": "expected_utility", "lambda": 3}), "expected_cost.terse", "missing"),
        (lambda d: d.__setitem__("fallback", "ghost"), "fallback", "unknown strategy 'ghost'"),
        (lambda d: d.pop("tiers"), "tiers", "Field required"),
        (lambda d: d["budgets"].__setitem__("extreme", {"max_tokens": 3}), "budgets.extreme", "Input should be"),
    ],
)
def test_bad_policy_names_file_and_field(tmp_path, mutate, field, words):
    raw = local_raw()
    mutate(raw)
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"{path}: field '{field}'"), first
    assert words in first
    # the CLI prints the same as one line and exits 2
    result = runner.invoke(app, ["policy", "validate", str(path)])
    assert result.exit_code == 2
    assert field in result.output and "Traceback" not in result.output


def test_yaml_syntax_error_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstrategies: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_policy(bad)
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_policy(tmp_path / "list.yaml")


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_cli_validate_accepts_examples(path):
    result = runner.invoke(app, ["policy", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")


def test_cli_schema_is_json_schema_and_accepts_examples():
    import jsonschema

    result = runner.invoke(app, ["policy", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert {"strategies", "tiers", "rule", "budgets", "fallback"} <= set(schema["properties"])
    for path in EXAMPLES_DIR.glob("*.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**local_raw(), "rule": {"type": "thresholds", "thresholds": {"hard": 2}}}, schema)


def test_save_policy_updates_revalidates_and_keeps_header(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text(LOCAL.read_text())
    policy = save_policy_updates(path, {"rule": {"type": "thresholds", "thresholds": {"normal": 0.3, "hard": 0.9}}})
    assert policy.rule.thresholds.normal == 0.3
    text = path.read_text()
    assert text.startswith("# The offline default")
    assert load_policy(path).rule.thresholds.hard == 0.9
    before = path.read_text()
    with pytest.raises(ConfigError, match="rule.thresholds.hard"):
        save_policy_updates(path, {"rule": {"type": "thresholds", "thresholds": {"hard": 7}}})
    assert path.read_text() == before  # a bad update leaves the file as it was
