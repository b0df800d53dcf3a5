-- oee: master data in, OEE windows out. The per-asset state machine (state durations split
-- at window boundaries, counter deltas, UNKNOWN time) is Python: see timeline.py and job.py.

-- source: asset master data (compacted topic, stands in for MES/ERP).
-- watermark: master data applies as soon as it arrives and must never hold back the
-- readings' event time, so its time attribute is the end of time
CREATE TEMPORARY TABLE assets (
  asset STRING NOT NULL,
  name STRING,
  ideal_cycle_time_s DOUBLE,
  state_tag STRING,
  total_count_tag STRING,
  good_count_tag STRING,
  state_codes MAP<STRING NOT NULL, STRING NOT NULL> NOT NULL,
  updated_ts TIMESTAMP(3) NOT NULL,
  never AS TO_TIMESTAMP_LTZ(253402300799000, 3),
  WATERMARK FOR never AS never
) WITH (
  ${assets_source}
);

-- one input stream for the per-asset state machine: readings and master data, both in event
-- time (a single-input Python operator: PyFlink's thread mode mishandles two-input ones)
CREATE TEMPORARY VIEW oee_input AS
SELECT
  asset, tag, `value`, `text`, quality,
  CAST(NULL AS DOUBLE) AS ideal_cycle_time_s, CAST(NULL AS STRING) AS state_tag,
  CAST(NULL AS STRING) AS total_count_tag, CAST(NULL AS STRING) AS good_count_tag,
  CAST(NULL AS MAP<STRING, STRING>) AS state_codes, event_ts
FROM readings
UNION ALL
SELECT
  asset, CAST(NULL AS STRING), CAST(NULL AS DOUBLE), CAST(NULL AS STRING), CAST(NULL AS STRING),
  ideal_cycle_time_s, state_tag, total_count_tag, good_count_tag,
  CAST(state_codes AS MAP<STRING, STRING>), never
FROM assets;

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

INSERT INTO oee_sink
SELECT
  msg_key,
  asset,
  CAST(TO_TIMESTAMP_LTZ(window_start, 3) AS TIMESTAMP(3)),
  CAST(TO_TIMESTAMP_LTZ(window_end, 3) AS TIMESTAMP(3)),
  planned_s, run_s, unplanned_stop_s, planned_stop_s, unknown_s,
  total_count, good_count, ideal_cycle_time_s, availability, performance, quality, oee
FROM oee_windows;
