-- downsample: cold-storage aggregates per asset and tag over tumbling 1-minute and 1-hour
-- windows of event time; min/max/avg/first/last/count over GOOD samples, the rest counted.
-- Input: the `readings` view of jobs/common/readings.sql (decoded, DLQ already split off).
-- first_non_null / last_non_null are FIRST_VALUE / LAST_VALUE (non-null, arrival order) that can
-- merge (jobs/udf): every aggregate here can, so each window aggregate runs in two phases, a
-- local one beside the source and a global one behind the keyed exchange, and partial results
-- cross the exchange instead of every reading. The hour is made of the minutes' results.

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

-- the 1-minute windows, with what the hour needs to combine them (the sum of the GOOD values);
-- both sinks read this one window aggregate
CREATE TEMPORARY VIEW minutes AS
SELECT
  asset, tag, window_start AS minute_start, window_end AS minute_end,
  window_time AS minute_time,
  last_non_null(unit) AS unit,
  MIN(`value`) FILTER (WHERE quality = 'GOOD') AS `min`,
  MAX(`value`) FILTER (WHERE quality = 'GOOD') AS `max`,
  SUM(`value`) FILTER (WHERE quality = 'GOOD') AS `sum`,
  first_non_null(`value`) FILTER (WHERE quality = 'GOOD') AS `first`,
  last_non_null(`value`) FILTER (WHERE quality = 'GOOD') AS `last`,
  COUNT(*) FILTER (WHERE quality = 'GOOD') AS `count`,
  COUNT(*) FILTER (WHERE quality <> 'GOOD') AS count_other
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_ts), INTERVAL '${minute_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end, window_time;

INSERT INTO agg_1m
SELECT
  CONCAT(asset, '|', tag), asset, tag, minute_start, minute_end, unit,
  `min`, `max`, `sum` / NULLIF(`count`, 0), `first`, `last`, `count`, count_other
FROM minutes;

-- the hour combines its minutes (a cascaded window aggregate): every reading is aggregated once,
-- and the hour holds exactly the readings its minutes hold, so a reading too late for its
-- minute (dead-lettered, or after a restart dropped by the minute window operator, whose
-- watermark is restored from the checkpoint) is missing from both, never from one only;
-- first / last: of the first and last minute that has a GOOD value
INSERT INTO agg_1h
SELECT
  CONCAT(asset, '|', tag), asset, tag, window_start, window_end,
  last_non_null(unit),
  MIN(`min`),
  MAX(`max`),
  SUM(`sum`) / NULLIF(SUM(`count`), 0),
  first_non_null(`first`),
  last_non_null(`last`),
  SUM(`count`),
  SUM(count_other)
FROM TABLE(TUMBLE(TABLE minutes, DESCRIPTOR(minute_time), INTERVAL '${hour_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end;
