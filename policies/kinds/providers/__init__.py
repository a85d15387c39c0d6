"""litellm custom providers of the built-in strategy kinds, and their shared base (:mod:`.base`).

Importing this package imports neither litellm nor torch; the modules import litellm.
"""
