"""A small synthetic catalog of real media files, users and interactions, made offline from a seed.

Every item is rendered from one latent topic (a palette, a shape, a motion and some title words), and every
synthetic user prefers one or two topics and walks through each topic in a fixed per-topic order. So pixels,
titles and interaction sequences all carry signal a recommender can learn, and the demo needs no download.
The same seed always gives the same manifest and the same interactions.

The modules, in the order they are used: `topics` (the latent topics), `frames` (drawing one frame of a
topic's shapes), `items` (one item's media file and manifest row), `users` (their interaction logs) and
`catalog` (`make_catalog`, which writes all of it).
"""

from jobs.synthetic.catalog import SyntheticCatalog, make_catalog

__all__ = ["SyntheticCatalog", "make_catalog"]
