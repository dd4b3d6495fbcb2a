"""The ``e4net`` command line (``e4net --help``)."""
