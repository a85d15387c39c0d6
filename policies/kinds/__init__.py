"""Strategy kinds: what a strategy's model string means, one plug-in module per kind.

A kind claims model strings by prefix (``local/``, ``token-routed/``; the ``litellm`` kind takes
everything else) and says everything the rest of Triage needs to know about them: its options in a
policy file, its price rule, the litellm provider it registers, the call arguments it adds, the
per-attempt metadata it reads back and folds into the ledger record, and its start-up check. The
contract and the registry are in :mod:`triage.policies.kinds.base`; adding a kind is one new module
here (plus its test), found by the registry's discovery rule (:mod:`triage.registry`).

The kinds live on the policies floor because a policy file is validated against them (options,
model syntax) and priced with them; the router only drives them. ``providers/`` holds the litellm
providers of the built-in kinds and their shared base (not plug-ins: skipped by discovery).
"""
