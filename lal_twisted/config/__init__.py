"""The configuration: typed sections (:mod:`.sections`) loaded and checked from
lal's JSON (:mod:`.loading`).  Everything else imports it from here."""

from lal_twisted.config.loading import from_dict, load, parse_listen_addr
from lal_twisted.config.sections import *  # noqa: F403 - the sections are this package's face
from lal_twisted.config.sections import __all__ as _sections
from lal_twisted.errors import ConfigError

__all__ = ["ConfigError", "from_dict", "load", "parse_listen_addr", *_sections]
