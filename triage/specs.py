"""The one grammar for plug-in specs on the command line and in policies: ``name:key=value,...``.

Replay routers (``threshold:score=prompt_words``) and probe features (``text:aux=false;pca=16``)
read their options the same way; only the separator between options differs.
"""

from __future__ import annotations

from collections.abc import Mapping


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


def format_spec(name: str, options: Mapping[str, object], *, separator: str = ",") -> str:
    """The inverse of :func:`parse_spec`: ``("text", {"aux": False})`` -> ``"text:aux=false"``.

    A value whose text would not read back as itself (it holds the separator, ``,``, ``:`` or ``=``, or
    is not a bool, number or string) is a ValueError rather than a spec that means something else."""
    pairs = []
    for key, value in options.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if not isinstance(value, (bool, int, float, str)) or any(c in text for c in (separator, ",", ":", "=")) \
                or parse_value(text) != value:
            raise ValueError(f"option {key}={value!r} of {name!r} cannot be written as a spec")
        pairs.append(f"{key}={text}")
    return f"{name}:{separator.join(pairs)}" if pairs else name

