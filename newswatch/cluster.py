"""Several embedded KRaft nodes on loopback as one replicated cluster.

For failover tests and ``bench/chaos``: each node is a `LocalBroker` with its
own ports and data directory, all of them voters of one controller quorum.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from newswatch.broker import LocalBroker, new_cluster_id
from newswatch.config import BrokerSettings, replace

__all__ = ["LocalCluster"]


class LocalCluster:
    """Several KRaft nodes on loopback forming one cluster, each broker and controller.

    Node ``i`` (from 1) keeps its data in ``<data_dir>/node<i>`` and listens on
    the ``i``-th pair of ``ports`` (client, controller). Internal topics are
    replicated to min(nodes, 3) nodes and, from three nodes on,
    ``min.insync.replicas`` is 2: topics created with replication factor 3 keep
    taking ``acks=all`` writes, and lose none, while any one node is down.
    """

    def __init__(self, settings: BrokerSettings, ports: Sequence[tuple[int, int]]) -> None:
        voters = ",".join(f"{i}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports, 1))
        root = Path(settings.data_dir)
        self.nodes = [
            LocalBroker(
                replace(
                    settings, data_dir=root / f"node{i}", port=port, controller_port=controller
                ),
                node_id=i,
                voters=voters,
            )
            for i, (port, controller) in enumerate(ports, 1)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self.nodes)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start all nodes together (none is ready before a quorum of them runs).

        Raises:
            BrokerError: as `LocalBroker.start`, for the first node that failed;
                the others are stopped again.
        """
        ids = [n.data_dir / "cluster.id" for n in self.nodes]
        known = [p.read_text(encoding="ascii").strip() for p in ids if p.exists()]
        cluster_id = known[0] if known else new_cluster_id()
        for path in ids:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(cluster_id + "\n", encoding="ascii")
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-node") as pool:
            starts = [pool.submit(node.start) for node in self.nodes]
        failed = [f.exception() for f in starts if f.exception() is not None]
        if failed:
            self.stop()
            raise failed[0]

    def stop(self, timeout: float = 30) -> None:
        """Stop all nodes together: a last node alone would wait for its lost quorum."""
        with ThreadPoolExecutor(len(self.nodes), thread_name_prefix="kafka-node") as pool:
            list(pool.map(lambda node: node.stop(timeout), self.nodes))
