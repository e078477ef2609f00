"""The shared domain: models and services used by the portal, the API and the CLI.

Nothing here touches ``request``, ``g``, ``session`` or templates; request facts
(source address, acting admin) are passed in as arguments.
"""
