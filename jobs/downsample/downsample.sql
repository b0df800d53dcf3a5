-- downsample: cold-storage aggregates per asset and tag over tumbling 1-minute and 1-hour
-- windows of event time; min/max/avg/first/last/count over GOOD samples, the rest counted.
-- Input: the `readings` view of jobs/common/readings.sql (decoded, DLQ already split off).

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
  LAST_VALUE(unit),
  MIN(`value`) FILTER (WHERE quality = 'GOOD'),
  MAX(`value`) FILTER (WHERE quality = 'GOOD'),
  AVG(`value`) FILTER (WHERE quality = 'GOOD'),
  FIRST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  LAST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality <> 'GOOD')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_ts), INTERVAL '${minute_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end;

INSERT INTO agg_1h
SELECT
  CONCAT(asset, '|', tag), asset, tag, window_start, window_end,
  LAST_VALUE(unit),
  MIN(`value`) FILTER (WHERE quality = 'GOOD'),
  MAX(`value`) FILTER (WHERE quality = 'GOOD'),
  AVG(`value`) FILTER (WHERE quality = 'GOOD'),
  FIRST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  LAST_VALUE(`value`) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality = 'GOOD'),
  COUNT(*) FILTER (WHERE quality <> 'GOOD')
FROM TABLE(TUMBLE(TABLE readings, DESCRIPTOR(event_ts), INTERVAL '${hour_window_s}' SECOND(9)))
GROUP BY asset, tag, window_start, window_end;
