-- downsample: cold-storage aggregates per asset and tag over tumbling 1-minute and 1-hour
-- windows of event time; min/max/avg/first/last/count over GOOD samples, the rest counted.
-- Input: the `readings` view of jobs/common/readings.sql (decoded, DLQ already split off).
-- first_non_null / last_non_null are FIRST_VALUE / LAST_VALUE (non-null, arrival order) that can
-- merge (jobs/udf): every aggregate here can, so each window aggregate runs in two phases, a
-- local one beside the source and a global one behind the keyed exchange, and partial results
-- cross the exchange instead of every reading.

-- sink: iiot.readings.1m, keyed by asset + tag, exactly-once
CREATE TEMPORARY TABLE agg_1m (
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
  ${sink_1m}
);

-- sink: iiot.readings.1h, same shape
CREATE TEMPORARY TABLE agg_1h WITH (
  ${sink_1h}
) LIKE agg_1m (EXCLUDING OPTIONS);

INSERT INTO agg_1m
SELECT
  CONCAT(asset, '|', tag), asset, tag, window_start, window_end,
  last_non_null(unit),
  MIN(`value`) FILTER (WHERE quality = 'GOOD'),
  MAX(`value`) FILTER (WHERE quality = 'GOOD'),
  AVG(`value`) FILTER (WHERE quality = 'GOOD'),
  first_non_null(`value`) FILTER (WHERE quality = 'GOOD'),
  last_non_null(`value`) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality <> 'GOOD')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_ts), INTERVAL '${minute_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end;

INSERT INTO agg_1h
SELECT
  CONCAT(asset, '|', tag), asset, tag, window_start, window_end,
  last_non_null(unit),
  MIN(`value`) FILTER (WHERE quality = 'GOOD'),
  MAX(`value`) FILTER (WHERE quality = 'GOOD'),
  AVG(`value`) FILTER (WHERE quality = 'GOOD'),
  first_non_null(`value`) FILTER (WHERE quality = 'GOOD'),
  last_non_null(`value`) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality <> 'GOOD')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_ts), INTERVAL '${hour_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end;
