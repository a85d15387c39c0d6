"""A chat tokenizer without transformers: HF ``tokenizers`` for the text, jinja2 for the template.

The int4 ONNX engine serves models with no torch or transformers installed, so it needs the two
things it used to borrow from transformers' ``AutoTokenizer``: tokenization (with character
offsets, to find the query's tokens) and the chat template. :class:`ChatTokenizer` offers the
subset of ``PreTrainedTokenizerFast`` that :mod:`triage.lm` uses, with the same results
(``tests/test_lm_onnx.py`` compares both on the same prompts):
``apply_chat_template(..., tokenize=False)``, ``__call__(text, return_offsets_mapping=True)``,
``decode``, ``get_vocab``, ``len()``, ``eos_token_id`` and ``backend_tokenizer``.

The template is rendered the way transformers renders it: a sandboxed jinja2 environment with
``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension, ``raise_exception`` and
``strftime_now`` globals and a ``tojson`` that keeps non-ASCII text.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from triage.lm.specs import ModelLoadError

TEMPLATE_FILE = "chat_template.jinja"


class TemplateError(ValueError):
    """The chat template refused the messages (its own ``raise_exception``)."""


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(source: str) -> Any:
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):  # AddedToken as saved
        return value["content"]
    return None


class ChatTokenizer:
    """Tokenizer + chat template of one model folder (``tokenizer.json``, ``tokenizer_config.json``
    and ``chat_template.jinja`` or a ``chat_template`` entry). Build it with :meth:`from_folder`."""

    def __init__(self, backend: Any, config: dict[str, Any], chat_template: str | None) -> None:
        self.backend_tokenizer = backend
        self.padding = None
        self._config = config
        self.chat_template = chat_template
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.eos_token_id = backend.token_to_id(self.eos_token) if self.eos_token else None
        self._vocab: dict[str, int] | None = None

    @classmethod
    def from_folder(cls, folder: str | Path) -> ChatTokenizer:
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
            config_path = folder / "tokenizer_config.json"
            config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the tokenizer in {folder}: {exc}") from exc
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t.get("template") for t in template if t.get("name") == "default"), None)
        if (folder / TEMPLATE_FILE).is_file():
            template = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
        return cls(backend, config, template if isinstance(template, str) else None)

    # -- the PreTrainedTokenizerFast subset ----------------------------------------------------

    def apply_chat_template(self, messages: list[dict[str, Any]], *, tokenize: bool = False,
                            add_generation_prompt: bool = True, **extra: Any) -> str:
        if tokenize:
            raise ValueError("ChatTokenizer.apply_chat_template renders text only (tokenize=False)")
        if self.chat_template is None:
            raise ModelLoadError("this model has no chat template")
        try:
            return _compile(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, tools=None,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "", **extra,
            )
        except TemplateError:
            raise
        except Exception as exc:  # a jinja error in a template is the model's, not ours
            raise TemplateError(f"the chat template failed: {exc}") from exc

    def __call__(self, text: str, *, add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> dict[str, list[Any]]:
        enc = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, list[Any]] = {"input_ids": list(enc.ids)}
        if return_offsets_mapping:
            out["offset_mapping"] = list(enc.offsets)
        return out

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return list(self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str:
        return self.backend_tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def get_vocab(self) -> dict[str, int]:
        if self._vocab is None:
            self._vocab = self.backend_tokenizer.get_vocab(with_added_tokens=True)
        return dict(self._vocab)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        return self.backend_tokenizer.token_to_id(token)

    def __len__(self) -> int:
        return int(self.backend_tokenizer.get_vocab_size(with_added_tokens=True))
