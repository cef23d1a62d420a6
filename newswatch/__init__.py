"""newswatch: streaming detection of Taiwan-related escalation signals in the news.

Connectors publish articles to Kafka; a Beam pipeline classifies them with a
transformer model and writes alerts back to Kafka.
"""

__version__ = "0.1.0"
