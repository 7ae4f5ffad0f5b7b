"""The error types that mean "the user must fix an input": shown as one sentence, never a traceback."""

from extractors.semantic_ids.base import QuantizeError
from pipeline.catalogs import CatalogError
from pipeline.config import ConfigError
from pipeline.filters import FilterError
from pipeline.store import StoreError
from recommenders.data import RecommenderError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, CatalogError, FilterError, StoreError,
                                             QuantizeError, RecommenderError)
