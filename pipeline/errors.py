"""The one base class of every error that means "the user must fix an input".

The front doors (the `seerec` CLI and `python -m jobs.<stage>`) catch `SeerecError` and show its message as one
sentence with exit code 2, never a traceback. Each layer defines its own subclasses next to the code that raises
them, so this module imports nothing from the project and every layer can use it.
"""


class SeerecError(Exception):
    """An input the user must fix (config, catalog, filter, store, data); its message is one sentence for them."""
