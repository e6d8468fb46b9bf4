"""The aggregator: owns one scoring request from start to end (split, deadlines, collecting partials)."""
