package io.otbridge.flink.oee;

import io.otbridge.flink.Registry;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Asset master data: the compacted iiot.assets topic, read like a lookup table (the JVM twin of
 * jobs/oee/assets.py). {@link #open} reads the whole topic before the first reading is used, then
 * a daemon thread follows the topic and applies each update as it arrives (within the broker's
 * fetch latency, whether or not readings flow): {@link #get} always sees the latest master data
 * without a restart. Master data never takes part in event time: a window uses the master data
 * known when it closes. A tombstone removes an asset; a record that cannot be decoded is skipped
 * and counted.
 */
final class AssetTable implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(AssetTable.class);
  private static final Duration OPEN_TIMEOUT = Duration.ofMinutes(5);
  private static final Duration POLL = Duration.ofSeconds(1);

  private final Map<String, String> kafka;
  private final String topic;
  private final Registry registry;
  private final Schema reader;
  private final Map<String, Master> masters = new ConcurrentHashMap<>();
  private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new HashMap<>();
  /** master data records applied (updates and tombstones), and records skipped as undecodable */
  private final AtomicLong applied = new AtomicLong();
  private final AtomicLong skipped = new AtomicLong();
  private KafkaConsumer<byte[], byte[]> consumer;
  private BinaryDecoder decoder;
  private Thread follower;
  private volatile boolean closing;

  AssetTable(Map<String, String> kafka, String topic, Registry registry, Schema reader) {
    this.kafka = kafka;
    this.topic = topic;
    this.registry = registry;
    this.reader = reader;
  }

  void open() {
    Properties props = new Properties();
    kafka.forEach((k, v) -> props.put(k, "sasl.jaas.config".equals(k) ? relocated(v) : v));
    props.put("client.id", "otbridge-oee-assets");
    props.put("enable.auto.commit", "false");
    props.put("isolation.level", "read_committed");
    props.put("auto.offset.reset", "earliest");
    consumer = new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    List<TopicPartition> parts = new ArrayList<>();
    List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofSeconds(30));
    if (infos != null) {
      infos.forEach(p -> parts.add(new TopicPartition(topic, p.partition())));
    }
    consumer.assign(parts);
    if (parts.isEmpty()) {
      consumer.close(Duration.ofSeconds(5));
      consumer = null;
      return;
    }
    consumer.seekToBeginning(parts);
    Map<TopicPartition, Long> ends = consumer.endOffsets(parts, Duration.ofSeconds(30));
    long deadline = System.nanoTime() + OPEN_TIMEOUT.toNanos();
    while (behind(ends)) { // the whole table before the first use
      if (System.nanoTime() > deadline) {
        throw new IllegalStateException(
            "oee: could not read the master data topic " + topic + " within " + OPEN_TIMEOUT);
      }
      for (ConsumerRecord<byte[], byte[]> r : consumer.poll(POLL)) {
        apply(r);
      }
    }
    follower = new Thread(this::follow, "otbridge-oee-assets-" + topic);
    follower.setDaemon(true);
    follower.start();
  }

  /** The follower thread: the consumer is its own from here on. */
  private void follow() {
    try {
      while (!closing) {
        try {
          for (ConsumerRecord<byte[], byte[]> r : consumer.poll(POLL)) {
            apply(r);
          }
        } catch (WakeupException e) {
          break;
        } catch (RuntimeException e) { // the broker's own failures are retried inside poll
          if (closing || Thread.currentThread().isInterrupted()) {
            break;
          }
          LOG.warn("oee: reading master data from {} failed, retrying: {}", topic, e.toString());
          sleepQuietly(POLL.toMillis());
        }
      }
    } finally {
      consumer.close(Duration.ofSeconds(5));
    }
  }

  Master get(String asset) {
    return masters.get(asset);
  }

  /** assets with master data now */
  int size() {
    return masters.size();
  }

  /** master data records applied since open (updates and tombstones) */
  long applied() {
    return applied.get();
  }

  /** master data records skipped since open (not decodable with the registry's schema) */
  long skipped() {
    return skipped.get();
  }

  @Override
  public void close() {
    closing = true;
    if (follower != null) {
      consumer.wakeup();
      try {
        follower.join(10_000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      follower = null;
    } else if (consumer != null) {
      consumer.close(Duration.ofSeconds(5));
    }
    consumer = null;
  }

  private static void sleepQuietly(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  private boolean behind(Map<TopicPartition, Long> ends) {
    for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
      if (consumer.position(e.getKey()) < e.getValue()) {
        return true;
      }
    }
    return false;
  }

  private void apply(ConsumerRecord<byte[], byte[]> r) {
    if (r.value() == null) { // a tombstone: the asset was removed
      masters.remove(r.key() == null ? "" : new String(r.key(), StandardCharsets.UTF_8));
      applied.incrementAndGet();
      return;
    }
    GenericRecord rec = decode(r.value());
    if (rec == null) {
      skipped.incrementAndGet(); // undecodable master data (the readings side has the DLQ)
      return;
    }
    Map<String, String> codes = new HashMap<>();
    Object rawCodes = rec.get("state_codes");
    if (rawCodes instanceof Map) {
      ((Map<?, ?>) rawCodes).forEach((k, v) -> codes.put(k.toString(), str(v)));
    }
    masters.put(
        rec.get("asset").toString(),
        new Master(
            (Double) rec.get("ideal_cycle_time_s"),
            str(rec.get("state_tag")),
            str(rec.get("total_count_tag")),
            str(rec.get("good_count_tag")),
            codes));
    applied.incrementAndGet();
  }

  private GenericRecord decode(byte[] raw) {
    if (!Registry.isWireFormat(raw)) {
      return null;
    }
    int schemaId = Registry.schemaId(raw);
    try {
      GenericDatumReader<GenericRecord> datumReader = readers.get(schemaId);
      if (datumReader == null) {
        String writer = registry.schemaText(schemaId);
        if (writer == null) {
          return null;
        }
        datumReader = new GenericDatumReader<>(new Schema.Parser().parse(writer), reader);
        readers.put(schemaId, datumReader);
      }
      decoder = DecoderFactory.get().binaryDecoder(raw, 5, raw.length - 5, decoder);
      return datumReader.read(null, decoder);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return null;
    } catch (Exception e) { // registry unavailable, schema mismatch, truncated body, ...
      return null;
    }
  }

  private static String str(Object o) {
    return o == null ? null : o.toString();
  }

  /**
   * Kafka's own login modules live under this jar's relocated package (see pom.xml): a JAAS
   * config written for the plain client names them by their original package.
   */
  static String relocated(String jaas) {
    String original = String.join(".", "org", "apache", "kafka") + ".";
    String name = KafkaConsumer.class.getName();
    String actual = name.substring(0, name.length() - "clients.consumer.KafkaConsumer".length());
    return jaas.replace(original, actual);
  }
}
