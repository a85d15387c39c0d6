"""The one grammar for plug-in specs on the command line and in policies: ``name:key=value,...``.

Replay routers (``threshold:score=prompt_words``) and probe features (``text:aux=false;pca=16``)
read their options the same way; only the separator between options differs.
"""

from __future__ import annotations


def parse_value(text: str) -> object:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_spec(spec: str, *, separator: str = ",", what: str = "option") -> tuple[str, dict[str, object]]:
    """``"name:k=v<sep>k=v"`` -> ``(name, {k: v})``; a pair without ``=`` is a ValueError."""
    name, _, arg_text = spec.partition(":")
    options: dict[str, object] = {}
    for pair in filter(None, arg_text.split(separator)):
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"{what} {pair!r} in {spec!r} is not key=value")
        options[key.strip()] = parse_value(value.strip())
    return name.strip(), options
