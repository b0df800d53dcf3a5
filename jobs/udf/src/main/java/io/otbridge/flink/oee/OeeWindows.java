package io.otbridge.flink.oee;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.otbridge.flink.Registry;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.flink.table.annotation.ArgumentHint;
import org.apache.flink.table.annotation.ArgumentTrait;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.metrics.Counter;
import org.apache.flink.metrics.Gauge;
import org.apache.flink.table.annotation.StateHint;
import org.apache.flink.table.api.dataview.ListView;
import org.apache.flink.table.api.dataview.MapView;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.functions.ProcessTableFunction;
import org.apache.flink.table.functions.TableSemantics;
import org.apache.flink.types.Row;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code oee_windows(input => TABLE t PARTITION BY asset, on_time => DESCRIPTOR(event_ts))}: the
 * OEE windows of each asset (jobs/oee), one row per closed window. The input table has the
 * columns asset, tag, value, text, quality and its time attribute.
 *
 * <p>Readings wait in list state until the watermark passes the end of their window (one timer
 * per asset and window end); then they are applied in event-time order (arrival order within a
 * millisecond) to the asset's {@link Timeline} and the window is emitted. A reading only appends
 * to the list: nothing per reading reads or rewrites the buffer or the timeline. Master data
 * comes from {@link AssetTable}; readings of an asset without master data are kept {@code
 * masterlessBacklogWindows} windows, then dropped and counted; an update to the master data
 * applies from the next window that closes after it arrived, without a restart.
 *
 * <p>A window is emitted once: a reading that reaches a window after it was closed (possible only
 * after a restart, when Flink has no watermark yet and lets readings from before the last
 * checkpoint through) is dropped and counted, never applied. Metrics of the operator, each with a
 * warning in the TaskManager log at most once a minute: {@code lateReadingsDropped}, {@code
 * readingsWithoutMasterData} (dropped after the backlog), {@code unknownStateCodes} (state
 * readings whose code the asset's master data does not name: their time counts as UNKNOWN); and
 * the gauges {@code masterDataAssets}, {@code masterDataRecordsApplied} and {@code
 * masterDataRecordsSkipped} (undecodable master data records).
 *
 * <p>Output: the partition key (asset) is put in front by Flink and the timer's time (rowtime)
 * behind.
 */
@FunctionHint(
    output =
        @DataTypeHint(
            "ROW<msg_key STRING, window_start BIGINT, window_end BIGINT, planned_s DOUBLE,"
                + " run_s DOUBLE, unplanned_stop_s DOUBLE, planned_stop_s DOUBLE,"
                + " unknown_s DOUBLE, total_count BIGINT, good_count BIGINT,"
                + " ideal_cycle_time_s DOUBLE, availability DOUBLE, performance DOUBLE,"
                + " quality DOUBLE, oee DOUBLE>"))
public class OeeWindows extends ProcessTableFunction<Row> {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(OeeWindows.class);
  private static final long WARN_EVERY_MS = 60_000;
  private static final String PENDING =
      "ARRAY<ROW<ts BIGINT NOT NULL, tag STRING, v DOUBLE, txt STRING, q STRING>>";
  /** keys of the `meta` map state: the asset's name, its timeline */
  private static final int NAME = 0;
  private static final int TIMELINE = 1;
  private static final DateTimeFormatter KEY_TIME =
      DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss'Z'").withZone(ZoneOffset.UTC);

  private final long windowMs;
  private final long staleAfterMs;
  private final int masterlessBacklogWindows;
  private final String kafkaJson;
  private final String assetsTopic;
  private final String registryUrl;
  private final String userInfo;
  private final String assetSchema;

  private transient AssetTable assets;
  private transient int assetPos, tag, value, text, quality;
  private transient Reported late, masterless, unknownCodes;

  /** A counter metric whose growth is logged at most once a minute. */
  private static final class Reported {
    final Counter counter;
    final String what;
    long loggedCount;
    long loggedAtMs = Long.MIN_VALUE;

    Reported(FunctionContext context, String name, String what) {
      counter = context.getMetricGroup().counter(name);
      this.what = what;
    }

    void add(long n, String example) {
      counter.inc(n);
      long now = System.currentTimeMillis();
      if (now - loggedAtMs >= WARN_EVERY_MS) {
        LOG.warn("oee: {} {} (e.g. {})", counter.getCount() - loggedCount, what, example);
        loggedCount = counter.getCount();
        loggedAtMs = now;
      }
    }
  }

  /**
   * @param windowMs OEE window length
   * @param staleAfterMs time after an asset's last GOOD reading from which its state is UNKNOWN
   * @param masterlessBacklogWindows how many windows readings of an asset without master data wait
   * @param kafkaJson Kafka client properties (bootstrap, security) as a JSON object of strings
   * @param assetsTopic the compacted master data topic
   * @param registryUrl Confluent-compatible registry API base
   * @param userInfo "user:password" for the registry, or null
   * @param assetSchema the Asset schema (schemas/Asset.avsc) as JSON text
   */
  public OeeWindows(
      long windowMs,
      long staleAfterMs,
      int masterlessBacklogWindows,
      String kafkaJson,
      String assetsTopic,
      String registryUrl,
      String userInfo,
      String assetSchema) {
    this.windowMs = windowMs;
    this.staleAfterMs = staleAfterMs;
    this.masterlessBacklogWindows = masterlessBacklogWindows;
    this.kafkaJson = kafkaJson;
    this.assetsTopic = assetsTopic;
    this.registryUrl = registryUrl;
    this.userInfo = userInfo;
    this.assetSchema = assetSchema;
  }

  @Override
  public void open(FunctionContext context) throws Exception {
    Map<String, String> kafka =
        new ObjectMapper().readValue(kafkaJson, new TypeReference<Map<String, String>>() {});
    assets =
        new AssetTable(
            kafka,
            assetsTopic,
            new Registry(registryUrl, userInfo),
            new Schema.Parser().parse(assetSchema));
    assets.open();
    AssetTable table = assets;
    context.getMetricGroup().gauge("masterDataAssets", (Gauge<Integer>) table::size);
    context.getMetricGroup().gauge("masterDataRecordsApplied", (Gauge<Long>) table::applied);
    context.getMetricGroup().gauge("masterDataRecordsSkipped", (Gauge<Long>) table::skipped);
    tag = -1;
    late = new Reported(context, "lateReadingsDropped",
        "readings arrived after their window was emitted and were dropped");
    masterless = new Reported(context, "readingsWithoutMasterData",
        "readings of assets without master data in the assets topic were dropped");
    unknownCodes = new Reported(context, "unknownStateCodes",
        "state readings had a code their asset's master data does not name (counted UNKNOWN)");
  }

  @Override
  public void close() {
    if (assets != null) {
      assets.close();
    }
  }

  public void eval(
      Context ctx,
      @StateHint(name = "pending", type = @DataTypeHint(PENDING), ttl = "0") ListView<Row> pending,
      @StateHint(name = "meta", type = @DataTypeHint("MAP<INT, BYTES>"), ttl = "0")
          MapView<Integer, byte[]> meta,
      @ArgumentHint(
              name = "input",
              value = {ArgumentTrait.SET_SEMANTIC_TABLE, ArgumentTrait.REQUIRE_ON_TIME})
          Row input)
      throws Exception {
    if (tag < 0) {
      positions(ctx.tableSemanticsFor("input"));
    }
    TimeContext<Long> time = ctx.timeContext(Long.class);
    long ts = time.time();
    if (!meta.contains(NAME)) { // the partition key, for onTimer
      String name = (String) input.getField(assetPos);
      meta.put(NAME, name.getBytes(StandardCharsets.UTF_8));
    }
    pending.add(
        Row.of(
            ts,
            input.getField(tag),
            input.getField(value),
            input.getField(text),
            input.getField(quality)));
    time.registerOnTime(ts - Math.floorMod(ts, windowMs) + windowMs);
  }

  public void onTimer(
      OnTimerContext ctx, ListView<Row> pending, MapView<Integer, byte[]> meta) throws Exception {
    TimeContext<Long> time = ctx.timeContext(Long.class);
    long end = time.time();
    long watermark = time.currentWatermark();
    String name = new String(meta.get(NAME), StandardCharsets.UTF_8);
    // Flink ignores a timer registered at or before the current watermark: a window that follows
    // within this watermark is closed here, as a timer would have closed it
    while (closeWindow(name, end, pending, meta)) {
      end += windowMs;
      if (end > watermark) {
        time.registerOnTime(end);
        return;
      }
    }
  }

  /** Close the window that ends at `end`; true if the next one must be closed too. */
  private boolean closeWindow(
      String name, long end, ListView<Row> pending, MapView<Integer, byte[]> state)
      throws Exception {
    Master master = assets.get(name);
    List<Row> all = new ArrayList<>();
    for (Row r : pending.get()) {
      all.add(r);
    }
    if (master == null) {
      // no master data (yet): keep the readings a while, then let them go
      long horizon = end - masterlessBacklogWindows * windowMs;
      List<Row> keep = new ArrayList<>(all.size());
      for (Row r : all) {
        if ((Long) r.getField(0) >= horizon) {
          keep.add(r);
        }
      }
      if (keep.size() != all.size()) {
        masterless.add(all.size() - keep.size(), name);
        pending.clear();
        pending.addAll(keep);
      }
      return !keep.isEmpty();
    }
    byte[] saved = state.get(TIMELINE);
    Timeline timeline =
        saved == null
            ? new Timeline(windowMs, staleAfterMs)
            : Timeline.fromBytes(saved, windowMs, staleAfterMs);
    List<Row> due = new ArrayList<>(all.size());
    List<Row> rest = new ArrayList<>();
    for (Row r : all) {
      ((Long) r.getField(0) < end ? due : rest).add(r);
    }
    due.sort(Comparator.comparingLong(r -> (Long) r.getField(0))); // stable: arrival order
    for (Row r : due) {
      long ts = (Long) r.getField(0);
      if (timeline.started && ts < timeline.cursorMs) {
        // its window is closed and was emitted (only after a restart can this happen)
        late.add(1, name + " at " + Instant.ofEpochMilli(ts));
        continue;
      }
      for (Timeline.WindowAcc acc : timeline.closeUntil(ts)) {
        collect(row(name, acc, master));
      }
      boolean known =
          timeline.apply(
              master,
              ts,
              (String) r.getField(1),
              (Double) r.getField(2),
              (String) r.getField(3),
              (String) r.getField(4));
      if (!known) {
        unknownCodes.add(1, name + " " + r.getField(1) + "=" + stateCode(r));
      }
    }
    if (!due.isEmpty()) {
      pending.clear();
      if (!rest.isEmpty()) {
        pending.addAll(rest);
      }
    }
    for (Timeline.WindowAcc acc : timeline.closeUntil(end)) {
      collect(row(name, acc, master));
    }
    state.put(TIMELINE, timeline.toBytes());
    // known time runs into the next window: close that one even if no reading comes
    return timeline.wantsNextWindow(end);
  }

  private static String stateCode(Row r) {
    String text = (String) r.getField(3);
    return text != null ? text : Timeline.code((Double) r.getField(2));
  }

  /** The OeeWindow record of a closed window (jobs/oee/timeline.py result()). */
  private Row row(String name, Timeline.WindowAcc acc, Master master) {
    long[] ms = acc.durationsMs;
    long plannedMs = windowMs - ms[Timeline.PLANNED_STOP] - ms[Timeline.UNKNOWN];
    long runMs = ms[Timeline.RUNNING];
    double planned = plannedMs / 1000.0;
    double run = runMs / 1000.0;
    Double ict = master.idealCycleTimeS;
    Double availability = plannedMs > 0 ? (double) runMs / plannedMs : null;
    Double performance = ict != null && runMs > 0 ? ict * acc.total / run : null;
    Double quality = acc.total > 0 ? (double) acc.good / acc.total : null;
    Double oee = ict != null && plannedMs > 0 ? ict * acc.good / planned : null;
    return Row.of(
        name + "|" + KEY_TIME.format(Instant.ofEpochMilli(acc.startMs)),
        acc.startMs,
        acc.startMs + windowMs,
        planned,
        run,
        ms[Timeline.UNPLANNED_STOP] / 1000.0,
        ms[Timeline.PLANNED_STOP] / 1000.0,
        ms[Timeline.UNKNOWN] / 1000.0,
        acc.total,
        acc.good,
        ict,
        availability,
        performance,
        quality,
        oee);
  }

  private void positions(TableSemantics semantics) {
    List<String> names =
        org.apache.flink.table.types.logical.utils.LogicalTypeChecks.getFieldNames(
            semantics.dataType().getLogicalType());
    assetPos = names.indexOf("asset");
    tag = names.indexOf("tag");
    value = names.indexOf("value");
    text = names.indexOf("text");
    quality = names.indexOf("quality");
    if (assetPos < 0 || tag < 0 || value < 0 || text < 0 || quality < 0) {
      throw new IllegalArgumentException(
          "oee_windows: the input table needs the columns asset, tag, value, text and quality;"
              + " it has " + names);
    }
  }
}
