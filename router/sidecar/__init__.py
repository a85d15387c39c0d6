"""The sidecar: an OpenAI-compatible HTTP service in front of the router (`triage serve`).

``create_app(settings)`` in :mod:`triage.router.sidecar.app` builds the FastAPI application; settings come
from :mod:`triage.router.sidecar.settings` (a YAML/TOML file plus ``TRIAGE_SIDECAR_*`` variables).
"""
