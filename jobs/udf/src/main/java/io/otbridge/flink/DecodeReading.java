package io.otbridge.flink;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.util.Utf8;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.FunctionContext;
import org.apache.flink.table.data.GenericRowData;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.data.StringData;
import org.apache.flink.table.functions.TableFunction;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * {@code decode_reading(raw BYTES)}: one row per Kafka record of iiot.readings, either the
 * reading's fields or a dead-letter reason and detail. Never throws on bad input.
 *
 * <p>The JVM twin of otbridge/codec/wire.py (WireDecoder + check_reading), with the same
 * reasons and details: not_avro, unknown_schema_id, schema_mismatch, nan_value, inf_value,
 * out_of_range, future_timestamp. The writer schema comes from the record's schema id
 * (Confluent wire format), fetched from the registry once per id and resolved against the
 * Reading schema. An unreachable registry is waited for, never a reason (the Python twin,
 * used by tools that show one record, says registry_unavailable).
 *
 * <p>Rows are emitted in Flink's internal format (RowData): each string goes from the record's
 * UTF-8 bytes into the row as bytes, never through a java.lang.String and back.
 */
@FunctionHint(
    output =
        @DataTypeHint(
            value =
                "ROW<reason STRING, detail STRING, asset STRING, tag STRING, `value` DOUBLE,"
                    + " `text` STRING, unit STRING, quality STRING, seq BIGINT,"
                    + " connector STRING>",
            bridgedTo = RowData.class))
public class DecodeReading extends TableFunction<RowData> {
  private static final long serialVersionUID = 1L;
  private static final long NEGATIVE_TTL_MS = 10_000;
  private static final Logger LOG = LoggerFactory.getLogger(DecodeReading.class);
  private static final byte[] GOOD = "GOOD".getBytes(StandardCharsets.UTF_8);

  private final String registryUrl;
  private final String userInfo;
  private final String readerSchemaText;
  private final long maxFutureMs;

  private transient Schema reader;
  private transient Map<Integer, GenericDatumReader<GenericRecord>> readers;
  private transient Map<Integer, Long> missingUntil;
  private transient Registry registry;
  private transient BinaryDecoder decoder;
  private transient GenericRecord reuse;
  private transient int asset, tag, value, text, unit, quality, sourceTs, seq, connector;

  /**
   * @param registryUrl Confluent-compatible API base, e.g. http://127.0.0.1:8080/apis/ccompat/v7
   * @param userInfo "user:password" for basic auth, or null
   * @param readerSchema the Reading schema (schemas/Reading.avsc) as JSON text
   * @param maxFutureMs how far in the future a source timestamp may be
   */
  public DecodeReading(String registryUrl, String userInfo, String readerSchema, long maxFutureMs) {
    this.registryUrl = registryUrl;
    this.userInfo = userInfo;
    this.readerSchemaText = readerSchema;
    this.maxFutureMs = maxFutureMs;
  }

  @Override
  public void open(FunctionContext context) {
    reader = new Schema.Parser().parse(readerSchemaText);
    readers = new HashMap<>();
    missingUntil = new HashMap<>();
    registry = new Registry(registryUrl, userInfo);
    asset = reader.getField("asset").pos();
    tag = reader.getField("tag").pos();
    value = reader.getField("value").pos();
    text = reader.getField("text").pos();
    unit = reader.getField("unit").pos();
    quality = reader.getField("quality").pos();
    sourceTs = reader.getField("source_ts").pos();
    seq = reader.getField("seq").pos();
    connector = reader.getField("connector").pos();
  }

  public void eval(byte[] raw) {
    if (!Registry.isWireFormat(raw)) {
      dead("not_avro", "no Confluent wire-format header (magic byte 0)");
      return;
    }
    int schemaId = Registry.schemaId(raw);
    GenericDatumReader<GenericRecord> datumReader = readers.get(schemaId);
    if (datumReader == null) {
      Long until = missingUntil.get(schemaId);
      if (until != null && until > System.currentTimeMillis()) {
        dead("unknown_schema_id", "schema id " + schemaId + " is not registered");
        return;
      }
      String writerText = writerSchema(schemaId);
      if (writerText == null) {
        missingUntil.put(schemaId, System.currentTimeMillis() + NEGATIVE_TTL_MS);
        dead("unknown_schema_id", "schema id " + schemaId + " is not registered");
        return;
      }
      try {
        datumReader = new GenericDatumReader<>(new Schema.Parser().parse(writerText), reader);
      } catch (RuntimeException e) {
        dead("schema_mismatch", truncate("schema id " + schemaId + ": " + e));
        return;
      }
      readers.put(schemaId, datumReader);
    }
    GenericRecord r;
    try {
      decoder = DecoderFactory.get().binaryDecoder(raw, 5, raw.length - 5, decoder);
      r = datumReader.read(reuse, decoder);
      reuse = r;
    } catch (Exception e) { // truncated body, unresolvable writer/reader pair, ...
      reuse = null;
      dead("schema_mismatch", truncate("schema id " + schemaId + ": " + e));
      return;
    }
    Object assetU = r.get(asset);
    Object tagU = r.get(tag);
    Double v = (Double) r.get(value);
    if (v != null && v.isNaN()) {
      dead("nan_value", assetU + " " + tagU + ": value is NaN");
      return;
    }
    if (v != null && v.isInfinite()) {
      dead("inf_value", assetU + " " + tagU + ": value is " + (v > 0 ? "inf" : "-inf"));
      return;
    }
    if (v != null && Math.abs(v) >= 0x1p63) { // no long holds it: a counter glitch
      dead(
          "out_of_range",
          String.format(
              Locale.ROOT, "%s %s: value %.3e is outside +/-2^63 (a counter glitch?)",
              assetU, tagU, v));
      return;
    }
    Object textU = r.get(text);
    Object qualityU = r.get(quality);
    if (v == null && (textU == null || textU.toString().isEmpty()) && isGood(qualityU)) {
      // BAD and UNCERTAIN readings may carry no value (a device that did not answer)
      dead("empty_value", assetU + " " + tagU + ": a GOOD reading with no value");
      return;
    }
    long ts = (Long) r.get(sourceTs);
    long now = System.currentTimeMillis();
    if (ts > now + maxFutureMs) {
      dead(
          "future_timestamp",
          String.format(
              Locale.ROOT,
              "%s %s: source_ts %d is %.0f s in the future",
              assetU,
              tagU,
              ts,
              (ts - now) / 1000.0));
      return;
    }
    collect(
        GenericRowData.of(
            null,
            null,
            sd(assetU),
            sd(tagU),
            v,
            sd(textU),
            sd(r.get(unit)),
            sd(qualityU),
            (Long) r.get(seq),
            sd(r.get(connector))));
  }

  /**
   * The writer schema of a schema id, null if the registry does not know it. While the registry
   * cannot be reached this waits for it (retrying, up to 10 s apart): the readings are delayed,
   * behind it, never dead-lettered for it; a cancelled job interrupts the wait.
   */
  private String writerSchema(int schemaId) {
    long delayMs = 200;
    long since = System.currentTimeMillis();
    while (true) {
      try {
        String text = registry.schemaText(schemaId);
        if (System.currentTimeMillis() - since > 1000) {
          LOG.warn("schema registry {} answers again (schema id {})", registryUrl, schemaId);
        }
        return text;
      } catch (Exception e) {
        if (delayMs == 200) {
          LOG.warn(
              "schema registry {} unreachable for schema id {} ({}): waiting for it, the"
                  + " readings behind this one are delayed, not dead-lettered",
              registryUrl,
              schemaId,
              e.toString());
        }
        try {
          Thread.sleep(delayMs);
        } catch (InterruptedException interrupted) {
          Thread.currentThread().interrupt();
          throw new IllegalStateException("interrupted waiting for the schema registry", e);
        }
        delayMs = Math.min(delayMs * 2, 10_000);
      }
    }
  }

  private void dead(String reason, String detail) {
    collect(
        GenericRowData.of(
            StringData.fromString(reason),
            StringData.fromString(detail),
            null, null, null, null, null, null, null, null));
  }

  /** A decoded Avro string as Flink's string: its UTF-8 bytes copied (the reader reuses them). */
  private static StringData sd(Object o) {
    if (o == null) {
      return null;
    }
    if (o instanceof Utf8) {
      Utf8 u = (Utf8) o;
      return StringData.fromBytes(Arrays.copyOf(u.getBytes(), u.getByteLength()));
    }
    return StringData.fromString(o.toString());
  }

  private static boolean isGood(Object quality) {
    if (quality instanceof Utf8) {
      Utf8 u = (Utf8) quality;
      return u.getByteLength() == GOOD.length
          && Arrays.equals(u.getBytes(), 0, GOOD.length, GOOD, 0, GOOD.length);
    }
    return quality != null && "GOOD".equals(quality.toString());
  }

  private static String truncate(String s) {
    return s.length() > 500 ? s.substring(0, 500) : s;
  }
}
