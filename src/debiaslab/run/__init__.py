"""A run's life: configure and train it (``train``), its directory and lock (``directory``), a run described in a
file (``config_file``), training from Python into the same directory (``fit``), and its ``report.md`` (``report``)."""
