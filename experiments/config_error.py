"""``ConfigError``: what every part of the experiments layer raises for a bad config field."""


class ConfigError(ValueError):
  """A config field that is missing, of the wrong type or has a bad value; the message names it
  (``config.loss.gamma: gamma must be > 0, got -1.0``)."""
