"""People's corrections of the model: the store both the service (writes) and the trainer (reads) use."""

from feedback.store import DB_FILE, FeedbackSample, FeedbackStore, Retention

__all__ = ["DB_FILE", "FeedbackSample", "FeedbackStore", "Retention"]
