"""Events of the payment flow on Kafka (or the embedded in-process bus).

topics.py        the topic names and their creation
publisher.py     the outbox relay's publishers (Kafka, or the in-process bus) and its stats
consumer.py      the payment-completed consumer: handle, retry, dead-letter, commit
dead_letters.py  the dead-letter topic: list and replay (and the embedded bus's dead letters)
"""
