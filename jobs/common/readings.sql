-- shared input of every job: iiot.readings as raw bytes, decoded by decode_reading (jobs/udf, Java),
-- so a record Flink's avro-confluent format would fail the job on goes to the DLQ instead.

-- source: raw record bytes plus where they came from.
-- event time is the Kafka record timestamp, which otbridge's connectors set to the reading's
-- source timestamp (or, for a source time more than 30 min ahead, which the broker's
-- message.timestamp.after.max.ms would refuse, to the ingest time)
CREATE TEMPORARY TABLE readings_raw (
  msg_key BYTES,
  `raw` BYTES,
  src_topic STRING METADATA FROM 'topic' VIRTUAL,
  src_partition INT METADATA FROM 'partition' VIRTUAL,
  src_offset BIGINT METADATA FROM 'offset' VIRTUAL,
  event_ts TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  -- watermark: ${out_of_orderness_s} s of device clock skew and network reordering; a record
  -- stamped further ahead than a job accepts (dead-lettered as future_timestamp) must not move
  -- it, or every reading after it would be late
  WATERMARK FOR event_ts AS CASE
    WHEN event_ts > TIMESTAMPADD(SECOND, ${max_future_s}, CURRENT_TIMESTAMP) THEN TO_TIMESTAMP_LTZ(0, 3)
    ELSE event_ts - INTERVAL '${out_of_orderness_s}' SECOND END
) WITH (
  ${readings_source}
);

-- decode: one row per record; reason is null for a usable reading
CREATE TEMPORARY VIEW readings_decoded AS
SELECT
  r.event_ts, r.src_topic, r.src_partition, r.src_offset, r.msg_key, r.`raw`,
  d.reason, d.detail, d.asset, d.tag, d.`value`, d.`text`, d.unit, d.quality, d.seq,
  d.connector,
  -- late: a record whose window the watermark has already closed would be dropped by the
  -- window operator; it is counted in the DLQ instead (a record merely behind the watermark,
  -- in a window still open, is on time)
  CASE WHEN d.reason IS NULL AND ${late_condition} THEN TRUE ELSE FALSE END AS too_late
FROM readings_raw AS r, LATERAL TABLE(decode_reading(r.`raw`))
  AS d(reason, detail, asset, tag, `value`, `text`, unit, quality, seq, connector)
WHERE ${source_filter};

CREATE TEMPORARY VIEW readings AS
SELECT event_ts, asset, tag, `value`, `text`, unit, quality, seq, connector
FROM readings_decoded
WHERE reason IS NULL AND NOT too_late;

-- sink: the dead-letter topic, keyed by source topic/partition/offset
CREATE TEMPORARY TABLE dlq (
  msg_key STRING NOT NULL,
  source_topic STRING NOT NULL,
  source_partition INT NOT NULL,
  source_offset BIGINT NOT NULL,
  `key` BYTES,
  `value` BYTES,
  reason STRING NOT NULL,
  detail STRING NOT NULL,
  producer STRING NOT NULL,
  dead_ts TIMESTAMP(3) NOT NULL
) WITH (
  ${dlq_sink}
);

INSERT INTO dlq
SELECT
  CONCAT(src_topic, '/', CAST(src_partition AS STRING), '/', CAST(src_offset AS STRING)),
  src_topic, src_partition, src_offset, msg_key, `raw`,
  COALESCE(reason, 'late'),
  COALESCE(detail, 'event time older than the watermark minus the allowed lateness'),
  '${job_name}',
  CAST(CURRENT_TIMESTAMP AS TIMESTAMP(3))
FROM readings_decoded
WHERE reason IS NOT NULL OR too_late;
