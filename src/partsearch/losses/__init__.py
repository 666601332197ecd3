"""Training losses: identity classification, ranking, commonality-based margin ranking (CMR),
and optional contrastive terms; `criterion.PartSearchCriterion` combines them."""
