"""The one settings object. Values come from the environment (``TRIAGE_*``) or a .env file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAGE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=PROJECT_ROOT.parent / "shared" / "data",
        description="Shared replay data (read-only); the checkout's sibling ../shared/data by default.",
    )
    cache_dir: Path = Field(
        default=PROJECT_ROOT / ".triage-cache",
        description="Generated artifacts: exported encoders, assembled GGUF files, feature caches.",
    )
    ledger_url: str = Field(
        default="triage-ledger.sqlite",
        description="Ledger location: a SQLite file path (or sqlite:///path) or a postgresql:// URL.",
    )
    lm_engine: Literal["onnx", "transformers"] = Field(
        default="onnx",
        description=(
            "Engine for local models: 'onnx' (int4 through onnxruntime-genai; build each model once "
            "with `triage models build NAME`) or 'transformers' (fp32 on torch, the build extra)."
        ),
    )
    lm_onnx_threads: int | None = Field(
        default=None,
        ge=1,
        description="onnxruntime-genai intra-op threads (None: every core this process may use).",
    )
    lm_threads: int | None = Field(
        default=1,
        ge=1,
        description=(
            "torch intra-op threads for the transformers engine (None: torch's default). One thread: on the shared "
            "2-core machine two threads ran the 135M model 4-5x slower once other work competed."
        ),
    )
    log_json: bool | None = Field(default=None, description="Force JSON logs (default: JSON unless a TTY).")
    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
