"""Method families: how ``debiaslab methods`` groups the registered methods (each method's ``family``)."""

from __future__ import annotations

#: family name -> what its methods have in common, in the order ``debiaslab methods`` lists them
FAMILIES: dict[str, str] = {
    "baseline": "plain training, the reference every method is compared with",
    "balancing": "make groups or classes count equally: loss weights, resampling, subsampling",
    "class-imbalance losses": "losses from class or group frequencies: focusing, effective numbers, margins, priors",
    "robust optimisation": "minimise the loss of a worst-case mixture of groups or of examples",
    "invariance": "penalise differences between environments (attribute values): gradients, risks, feature statistics",
    "augmentation": "train on mixed inputs and labels",
    "inferred minority": "a reference model (ERM, biased, amplified) flags what to upweight; no training labels",
    "sparse training": "dynamic sparse training that upweights bias-conflicting examples",
    "distillation": "a student trained from a teacher model",
    "last-layer retraining": "keep a trained feature extractor, re-fit its last layer on a reweighted or balanced set",
    "pseudo attribute labels": "predict the missing attribute from a few labelled examples, then train with the groups",
}
