"""Domain exceptions. Each message says what was wrong and how to fix it; the edges (CLI, UI,
API, scheduler) translate them, nothing else catches them."""


class AssistantError(Exception):
    """Base of every error the product reports to a person."""


class ConfigError(AssistantError):
    """config.toml is unreadable or has invalid settings (the message lists every problem)."""


class ModelError(AssistantError):
    """The base model cannot be found, converted or loaded."""


class AdapterError(AssistantError):
    """An adapter directory is missing, broken, or not allowed."""


class InputError(AssistantError):
    """A request is malformed: empty, too long, wrong type."""


class BusyError(AssistantError):
    """Too many requests are waiting for the model, or a user hit the rate limit."""


class StoreError(AssistantError):
    """The database cannot be opened or written (e.g. another process holds it)."""


class NotFoundError(AssistantError):
    """A conversation, turn, adapter or rollout that was named does not exist (for this user)."""


class TransitionError(AssistantError):
    """An adapter or rollout state change the lifecycle does not allow."""


class RetrievalError(AssistantError):
    """The vector store or embedder failed, or a document could not be ingested."""


class TrainingError(AssistantError):
    """Curation, training or validation could not run."""
