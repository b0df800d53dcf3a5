package io.otbridge.flink.conditions;

import static io.otbridge.flink.conditions.KeyState.NONE;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.types.Row;

/**
 * The conditions job's state machines as a process table function: the JVM twin of
 * detectors.py {@code Monitor} (which stays the oracle: tests/test_conditions_jvm.py drives both
 * with the same streams and requires the same alerts).
 *
 * <p>Called with the readings partitioned by asset, tag and {@code on_time} set to their event
 * time; the input row is (asset, tag, value, quality, unit, ...). One output row per transition:
 * (rule, kind, severity, status, event_ms, raised_ms, value, threshold, message), which Flink
 * prefixes with asset, tag and suffixes with rowtime.
 *
 * <p>Deadlines (on/off delays, stale timeouts) are event-time timers; only the earliest is
 * registered, and only when it moves earlier; a timer that finds its deadline moved on registers
 * the new one. A timer fires the deadlines up to the watermark that fired it (not only up to its
 * own time: Flink 2.2 drops a timer registered at or behind the watermark). Which of a reading or
 * the watermark fires a deadline does not change the result: a reading fires the deadlines before
 * it with the unit in force before it, and a CLEARED carries the raised_ts of its own episode.
 */
@DataTypeHint("ROW<rule STRING NOT NULL, kind STRING NOT NULL, severity STRING NOT NULL,"
    + " status STRING NOT NULL, event_ms BIGINT NOT NULL, raised_ms BIGINT NOT NULL,"
    + " `value` DOUBLE, threshold DOUBLE, message STRING NOT NULL>")
public class ConditionsFunction extends ProcessTableFunction<Row> {
  private static final long serialVersionUID = 1L;

  private final List<Detector> rules;
  private transient Map<Long, Detector> byId;
  /** asset -> tag -> the matching rules, in file order (detectors.py Monitor.detectors). */
  private transient Map<String, Map<String, Matched>> matched;

  private static final class Matched {
    final Detector[] detectors;
    final long[] ids;

    Matched(List<Detector> found) {
      detectors = found.toArray(new Detector[0]);
      ids = new long[detectors.length];
      for (int i = 0; i < ids.length; i++) {
        ids[i] = detectors[i].id;
      }
    }
  }

  /** rulesJson: rules.py rules_json(rules), a JSON list of validated rules. */
  public ConditionsFunction(String rulesJson) {
    JsonNode root;
    try {
      root = new ObjectMapper().readTree(rulesJson);
    } catch (IOException e) {
      throw new UncheckedIOException("conditions: the rules are not JSON", e);
    }
    List<Detector> parsed = new ArrayList<>();
    for (JsonNode rule : root) {
      parsed.add(Detector.of(rule));
    }
    rules = parsed;
  }

  @Override
  public void open(FunctionContext context) {
    byId = new HashMap<>();
    for (Detector d : rules) {
      byId.put(d.id, d);
    }
    matched = new HashMap<>();
  }

  private Matched matching(String asset, String tag) {
    Map<String, Matched> tags = matched.computeIfAbsent(asset, a -> new HashMap<>());
    Matched m = tags.get(tag);
    if (m == null) {
      List<Detector> found = new ArrayList<>();
      for (Detector d : rules) {
        if (d.matches(asset, tag)) {
          found.add(d);
        }
      }
      m = new Matched(found);
      tags.put(tag, m);
    }
    return m;
  }

  public void eval(Context ctx, @StateHint KeyState state,
      @ArgumentHint({ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.REQUIRE_ON_TIME})
          Row input) {
    TimeContext<Long> time = ctx.timeContext(Long.class);
    long ts = time.time();
    // detectors.py Monitor.on_reading
    if (state.lastTs != NONE && ts < state.lastTs) {
      return; // older than the last reading applied
    }
    state.lastTs = ts;
    // deadlines before this sample fire with the unit in force before it, as from the watermark
    String before = state.unit == null ? "" : state.unit;
    String unit = (String) input.getField(4);
    state.unit = unit != null && !unit.isEmpty() ? unit : before;
    Matched m = matching((String) input.getField(0), (String) input.getField(1));
    if (state.ids == null || !Arrays.equals(state.ids, m.ids)) {
      state.resize(m.ids);
    }
    Double value = (Double) input.getField(2);
    String quality = (String) input.getField(3);
    Detector[] detectors = m.detectors;
    for (int i = 0; i < detectors.length; i++) {
      Detector det = detectors[i];
      long raisedTs = state.l[Detector.li(i, Detector.L_RAISED_TS)];
      List<Detector.Change> out = det.advance(state, i, ts - 1, before, null);
      out = det.sample(state, i, ts, value, quality, state.unit, out);
      if (out != null) {
        emit(det, raisedTs, out);
      }
    }
    arm(state, time, detectors);
  }

  public void onTimer(OnTimerContext ctx, KeyState state) {
    TimeContext<Long> time = ctx.timeContext(Long.class);
    long fired = time.time();
    Long watermark = time.currentWatermark();
    long now = watermark == null ? fired : Math.max(fired, watermark);
    if (state.timer != NONE && state.timer <= fired) {
      state.timer = NONE;
    }
    if (state.ids == null) {
      return;
    }
    // detectors.py Monitor.on_time, up to the watermark
    Detector[] detectors = new Detector[state.ids.length];
    for (int i = 0; i < detectors.length; i++) {
      Detector det = byId.get(state.ids[i]);
      detectors[i] = det;
      if (det != null) {
        long raisedTs = state.l[Detector.li(i, Detector.L_RAISED_TS)];
        List<Detector.Change> out = det.advance(state, i, now, state.unit, null);
        if (out != null) {
          emit(det, raisedTs, out);
        }
      }
    }
    arm(state, time, detectors);
  }

  /** The changes as rows; a CLEARED carries the raised_ts of the episode it ends. */
  private void emit(Detector det, long raisedTs, List<Detector.Change> changes) {
    for (Detector.Change c : changes) {
      if (c.status.equals(Detector.RAISED)) {
        raisedTs = c.eventTs;
      }
      collect(Row.of(det.name, det.kind, det.severity, c.status, c.eventTs, raisedTs, c.value,
          c.threshold, c.message));
    }
  }

  /** Register the earliest pending deadline, if it is earlier than the timer registered. */
  private static void arm(KeyState state, TimeContext<Long> time, Detector[] detectors) {
    long due = NONE;
    for (int i = 0; i < detectors.length; i++) {
      if (detectors[i] != null) {
        long d = detectors[i].deadline(state, i);
        if (d != NONE && (due == NONE || d < due)) {
          due = d;
        }
      }
    }
    if (due != NONE && (state.timer == NONE || due < state.timer)) {
      time.registerOnTime(due);
      state.timer = due;
    }
  }
}
