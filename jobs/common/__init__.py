"""What the jobs share: raw Kafka input decoded in Python, bad records to the dead-letter topic."""
