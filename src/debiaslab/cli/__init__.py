"""The command line: the parser and commands (``main``), the commands on finished runs (``deploy``), group
inference (``groups``) and the options several commands share (``options``)."""
