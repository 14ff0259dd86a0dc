"""The dev harness: local Kafka/Zipkin launchers, the embedded schema registry, the demo and the carrier
simulator. Production never imports it; ``smsflow run``, the tests and the benchmark do."""
