"""What the Kinesis and DynamoDB Streams sources share: shard listing and the order of
parents and children (:mod:`.shards`), per-shard checkpoints over the acknowledged prefix
(:mod:`.progress`), and the shard readers (:mod:`.source`)."""
