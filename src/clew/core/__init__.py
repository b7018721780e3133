"""The foundation: the span model, the query language, durations, attributes, domain errors, the
caller's identity and metric declarations. It imports nothing else of clew."""
