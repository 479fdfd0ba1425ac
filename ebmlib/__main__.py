"""``python -m ebmlib <command>``: the book's command line (:mod:`ebmlib.book.cli`)."""

import sys

from .book.cli import main

if __name__ == "__main__":
    sys.exit(main())
