-- conditions: readings in, alert transitions out. The per asset + tag state machines (limits,
-- delays, stale timers, anomaly baselines) are Python: see detectors.py and job.py.

-- input of the state machines: only readings some rule watches (the rest never reach Python)
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

INSERT INTO alerts_sink
SELECT
  msg_key, asset, tag, rule, kind, severity, status,
  CAST(TO_TIMESTAMP_LTZ(event_ts, 3) AS TIMESTAMP(3)),
  CAST(TO_TIMESTAMP_LTZ(raised_ts, 3) AS TIMESTAMP(3)),
  `value`, threshold, message
FROM alerts;
