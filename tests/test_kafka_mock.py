"""The mock cluster the Kafka tests run against (tests/kafka_mock.py) has the shape they assume."""

from __future__ import annotations

from kafka_mock import BROKERS, PARTITIONS, MockKafka


def test_mock_cluster_has_three_brokers_and_a_six_partition_topic(mock_kafka: MockKafka):
    from kafka import KafkaConsumer

    topic = mock_kafka.new_topic("shape")
    consumer = KafkaConsumer(bootstrap_servers=mock_kafka.bootstrap_servers)
    try:
        assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
        assert len(consumer._client.cluster.brokers()) == BROKERS  # no public accessor
    finally:
        consumer.close()
