"""adl-stream: an auto-deleveraging engine for perpetual-futures exchanges, run as a Kafka stream processor."""

__version__ = "0.1.0"
