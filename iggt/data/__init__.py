"""Scenes with exact ground truth: the on-disk record format, the procedural generator and the
record's ground truth as a `Scene`. Training, evaluation and grounding all read their data here."""
