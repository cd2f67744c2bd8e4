"""Group inference: pseudo-groups for every training and validation example, from a biased reference model,
without reading any attribute label (JTT's error set, a GCE model, BAM's amplified model, GEORGE/SPARE clustering,
EIIL). A groups file carries them to any method or selection rule that reads groups (``--groups FILE``)."""
