"""Outside world -> the articles topic.

Modules, in the order data flows through them:

* `connectors.fetch`: safe HTTP fetching of feeds (`Fetcher`);
* `connectors.feeds`: feed bytes -> `Article`s and `DeadLetter`s (`parse_feed`);
* `connectors.files`: local documents -> records (`read_document`, `changed_files`);
* `connectors.publish`: records -> Kafka, acknowledged (`Publisher`);
* `connectors.state`: restart-safe checkpoints and feed health (`StateStore`);
* `connectors.service`: the polling and watching loop (`run_connectors`);
* `connectors.commands`: ``newswatch ingest``.
"""
