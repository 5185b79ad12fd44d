"""The streaming runtime: Kafka in, the engine in the middle, Kafka and metrics out."""
