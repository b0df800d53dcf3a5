-- conditions: readings in, alert transitions out. The per asset + tag state machines (limits,
-- delays, stale timers, anomaly baselines) run on the JVM: check_conditions, a process table
-- function (jobs/udf io.otbridge.flink.conditions), the twin of detectors.py.

-- input of the state machines: only readings some rule watches (the rest never reach them)
CREATE TEMPORARY VIEW conditions_input AS
SELECT asset, tag, `value`, quality, unit, event_ts
FROM readings
WHERE ${rule_filter};

-- sink: iiot.alerts, compacted, key asset|tag|rule, so the topic holds each alert's latest
-- transition; at-least-once (a repeated transition under the same key is harmless)
CREATE TEMPORARY TABLE alerts_sink (
  msg_key STRING NOT NULL,
  asset STRING NOT NULL,
  tag STRING NOT NULL,
  rule STRING NOT NULL,
  kind STRING NOT NULL,
  severity STRING NOT NULL,
  status STRING NOT NULL,
  event_ts TIMESTAMP(3) NOT NULL,
  raised_ts TIMESTAMP(3) NOT NULL,
  `value` DOUBLE,
  threshold DOUBLE,
  message STRING NOT NULL
) WITH (
  ${alerts_sink}
);

-- state per asset + tag, deadlines as event-time timers; the output is prefixed with the
-- partition columns (asset, tag) and suffixed with rowtime
INSERT INTO alerts_sink
SELECT
  CONCAT(asset, '|', tag, '|', rule), asset, tag, rule, kind, severity, status,
  CAST(TO_TIMESTAMP_LTZ(event_ms, 3) AS TIMESTAMP(3)),
  CAST(TO_TIMESTAMP_LTZ(raised_ms, 3) AS TIMESTAMP(3)),
  `value`, threshold, message
FROM TABLE(check_conditions(
  input => TABLE conditions_input PARTITION BY (asset, tag),
  on_time => DESCRIPTOR(event_ts)
));

-- the wall clock (--wall-clock, the default): a tick a second into the clock topic, which the
-- readings source reads too (register_readings clock_topic): while readings flow it changes
-- nothing; once every readings partition is idle (30 s) the ticks move event time on with the
-- wall clock, so stale timeouts come due when a whole plant falls silent
${clock}
