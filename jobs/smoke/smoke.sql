-- smoke: the foundation's end-to-end check of Kafka + registry + Flink. Per asset and tag,
-- 1-minute tumbling aggregates of the readings' values (GOOD samples only), Avro in and out.

-- source: every reading, Avro (Confluent wire format) via the registry
CREATE TEMPORARY TABLE readings (
  asset STRING NOT NULL,
  tag STRING NOT NULL,
  `value` DOUBLE,
  `text` STRING,
  unit STRING,
  quality STRING NOT NULL,
  source_ts TIMESTAMP(3) NOT NULL,
  ingest_ts TIMESTAMP(3) NOT NULL,
  source STRING NOT NULL,
  seq BIGINT NOT NULL,
  connector STRING NOT NULL,
  -- watermark: 5 s of device clock skew and network reordering
  WATERMARK FOR source_ts AS source_ts - INTERVAL '5' SECOND
) WITH (
  ${readings_source}
);

-- sink: ReadingAggregate, keyed by asset + tag
CREATE TEMPORARY TABLE aggregates (
  msg_key STRING NOT NULL,
  asset STRING NOT NULL,
  tag STRING NOT NULL,
  window_start TIMESTAMP(3) NOT NULL,
  window_end TIMESTAMP(3) NOT NULL,
  unit STRING,
  `min` DOUBLE,
  `max` DOUBLE,
  `avg` DOUBLE,
  `first` DOUBLE,
  `last` DOUBLE,
  `count` BIGINT NOT NULL,
  count_other BIGINT NOT NULL
) WITH (
  ${aggregates_sink}
);

INSERT INTO aggregates
SELECT
  CONCAT(asset, '|', tag),
  asset,
  tag,
  window_start,
  window_end,
  LAST_VALUE(unit),
  MIN(`value`) FILTER (WHERE quality = 'GOOD'),
  MAX(`value`) FILTER (WHERE quality = 'GOOD'),
  AVG(`value`) FILTER (WHERE quality = 'GOOD'),
  FIRST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  LAST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality <> 'GOOD')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(source_ts), INTERVAL '1' MINUTE))
GROUP BY asset, tag, window_start, window_end;
