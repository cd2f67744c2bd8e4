"""``debiaslab audit``: a page of figures that shows where a dataset's shortcut lives and what a run does about it.

The audit reads a finished run (or only a dataset) and writes Markdown with PNG figures; it trains nothing but an
optional biased reference model (:mod:`debiaslab.audit.reference`).
"""
