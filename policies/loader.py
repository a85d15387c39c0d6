"""Loading and saving policy files (YAML) with errors that name the file and the field.

A bad file fails with :class:`ConfigError` whose message reads like
``policies/x.yaml: field 'rule.thresholds.hard': Input should be less than or equal to 1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import re

import yaml
from pydantic import ValidationError

from triage.policies.policy import Policy
from triage.errors import ConfigError

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
DEFAULT_POLICY = EXAMPLES_DIR / "local.yaml"
_RULE_TAGS = ("thresholds", "expected_utility", "cascade")
_LOCATED = re.compile(r"^([A-Za-z_][\w.]*): (.+)$", re.S)


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping naming the same key twice.

    PyYAML keeps the last value silently, so a policy or settings file with two ``strategies:``
    (or two ``api_keys:``) blocks would run with half of what its author wrote. Keys brought in by
    a ``<<`` merge may still be overridden: that is what merges are for.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {key!r}",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (raises ``yaml.YAMLError``)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p != "[key]"]  # a bad mapping key: the key itself names the place
    # Discriminated unions put the tag into the location (rule.thresholds.thresholds.hard); drop it.
    if len(parts) >= 2 and parts[0] == "rule" and parts[1] in _RULE_TAGS:
        parts.pop(1)
    return ".".join(parts)


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if err.get("type") == "extra_forbidden":
        msg = "unknown field (check the spelling; `triage policy schema` lists the fields)"
    return msg


def validation_message(exc: ValidationError, source: str) -> str:
    """One readable line per error, the first one first."""
    lines = []
    for err in exc.errors():
        path = _field_path(tuple(err.get("loc", ())))
        msg = _message(err)
        # Cross-field checks raise "a.b.c: message"; give them the same shape as field errors.
        located = _LOCATED.match(msg)
        if located:
            path = ".".join(p for p in (path, located.group(1)) if p)
            msg = located.group(2)
        lines.append(f"{source}: field '{path}': {msg}" if path else f"{source}: {msg}")
    return "\n".join(lines)


def policy_from_dict(obj: Any, source: str = "<policy>", *, for_calibration: bool = False) -> Policy:
    """Validate a parsed policy. ``for_calibration`` accepts missing expected costs (calibrate fills them)."""
    if not isinstance(obj, dict):
        raise ConfigError(f"{source}: a policy file must be a YAML mapping, got {type(obj).__name__}")
    try:
        return Policy.model_validate(obj, context={"expected_cost_optional": for_calibration})
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source)) from None


def read_policy_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"policy file not found: {p}")
    try:
        obj = load_yaml(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    if obj is None:
        raise ConfigError(f"{p}: the file is empty")
    return obj


def load_policy(path: str | Path | None = None, *, for_calibration: bool = False) -> Policy:
    """Load and validate a policy file (default: ``policies/examples/local.yaml``)."""
    p = Path(path) if path is not None else DEFAULT_POLICY
    return policy_from_dict(read_policy_yaml(p), str(p), for_calibration=for_calibration)


def resolve_probe_path(policy: Policy, policy_path: str | Path | None) -> str:
    """``default``, or the probe path made absolute relative to the policy file's folder."""
    if policy.probe == "default":
        return "default"
    probe = Path(policy.probe).expanduser()
    if not probe.is_absolute() and policy_path is not None:
        beside = Path(policy_path).resolve().parent / probe
        if beside.exists() or not probe.exists():
            probe = beside
    return str(probe)


def save_policy_updates(path: str | Path, updates: dict[str, Any]) -> Policy:
    """Write top-level ``updates`` (e.g. ``rule``, ``expected_cost``, ``calibration``) into a policy file.

    The file is re-validated before it is replaced (atomically), so a bad update leaves the old file.
    Leading comment lines are kept; comments inside the mapping are not (PyYAML does not keep them).
    """
    p = Path(path)
    raw = read_policy_yaml(p)
    raw.update(updates)
    policy = policy_from_dict(raw, str(p))
    text = p.read_text(encoding="utf-8")
    header = []
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            header.append(line)
        else:
            break
    body = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, width=100)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(("\n".join(header) + "\n" if header else "") + body, encoding="utf-8")
    tmp.replace(p)
    return policy
