-- oee: OEE windows out. The per-asset state machine (state durations split at window
-- boundaries, counter deltas, UNKNOWN time) and the master data lookup run on the JVM:
-- oee_windows is jobs/udf's io.otbridge.flink.oee.OeeWindows, a process table function whose
-- oracle is timeline.py (tests/test_oee_jvm.py holds them to identical output).

-- input: usable readings with their event time
CREATE TEMPORARY VIEW oee_input AS
SELECT asset, tag, `value`, `text`, quality, event_ts FROM readings;

-- sink: iiot.oee, keyed by asset + window start, exactly-once
CREATE TEMPORARY TABLE oee_sink (
  msg_key STRING NOT NULL,
  asset STRING NOT NULL,
  window_start TIMESTAMP(3) NOT NULL,
  window_end TIMESTAMP(3) NOT NULL,
  planned_s DOUBLE NOT NULL,
  run_s DOUBLE NOT NULL,
  unplanned_stop_s DOUBLE NOT NULL,
  planned_stop_s DOUBLE NOT NULL,
  unknown_s DOUBLE NOT NULL,
  total_count BIGINT NOT NULL,
  good_count BIGINT NOT NULL,
  ideal_cycle_time_s DOUBLE,
  availability DOUBLE,
  performance DOUBLE,
  quality DOUBLE,
  oee DOUBLE
) WITH (
  ${oee_sink}
);

-- per asset, one row per closed window (asset comes first as the partition key; the timer's
-- rowtime last, unused)
INSERT INTO oee_sink
SELECT
  msg_key,
  asset,
  CAST(TO_TIMESTAMP_LTZ(window_start, 3) AS TIMESTAMP(3)),
  CAST(TO_TIMESTAMP_LTZ(window_end, 3) AS TIMESTAMP(3)),
  planned_s, run_s, unplanned_stop_s, planned_stop_s, unknown_s,
  total_count, good_count, ideal_cycle_time_s, availability, performance, quality, oee
FROM oee_windows(input => TABLE oee_input PARTITION BY asset, on_time => DESCRIPTOR(event_ts),
                 uid => 'oee-windows');
