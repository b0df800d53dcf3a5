package io.otbridge.flink.oee;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * The running OEE state of one asset, fed in event-time order: the JVM twin of
 * jobs/oee/timeline.py (Timeline, WindowAcc, result), which is the oracle (tests/test_oee_jvm.py
 * requires identical output). {@code cursorMs} is how far time has been attributed.
 */
final class Timeline {
  static final int RUNNING = 0;
  static final int UNPLANNED_STOP = 1;
  static final int PLANNED_STOP = 2;
  static final int UNKNOWN = 3;
  private static final byte FORMAT = 1;

  /** One window's accumulators; durations in integer ms, indexed by category. */
  static final class WindowAcc {
    final long startMs;
    final long[] durationsMs = new long[4];
    long total;
    long good;

    WindowAcc(long startMs) {
      this.startMs = startMs;
    }
  }

  final long windowMs;
  final long staleAfterMs;
  boolean started; // cursor_ms is not None
  long cursorMs;
  int category = UNKNOWN;
  long liveUntilMs;
  final Map<String, Double> lastCounter = new HashMap<>();
  final TreeMap<Long, WindowAcc> windows = new TreeMap<>();

  Timeline(long windowMs, long staleAfterMs) {
    this.windowMs = windowMs;
    this.staleAfterMs = staleAfterMs;
  }

  /** A master data category name; anything but the three known ones counts as UNKNOWN. */
  static int category(String name) {
    if ("RUNNING".equals(name)) {
      return RUNNING;
    }
    if ("UNPLANNED_STOP".equals(name)) {
      return UNPLANNED_STOP;
    }
    if ("PLANNED_STOP".equals(name)) {
      return PLANNED_STOP;
    }
    return UNKNOWN;
  }

  // -- feeding -----------------------------------------------------------------------------

  /** Attribute [cursor, t) to the current category (UNKNOWN past the liveness horizon). */
  void advanceTo(long tMs) {
    if (!started) {
      // the first window of an asset is UNKNOWN up to its first reading
      attribute(tMs - Math.floorMod(tMs, windowMs), tMs, UNKNOWN);
      started = true;
      cursorMs = tMs;
      window(tMs);
      return;
    }
    if (tMs <= cursorMs) {
      return;
    }
    long knownEnd = Math.min(tMs, Math.max(cursorMs, liveUntilMs));
    attribute(cursorMs, knownEnd, category);
    attribute(knownEnd, tMs, UNKNOWN);
    cursorMs = tMs;
  }

  /**
   * One reading at t (call advanceTo(t) first). False for a GOOD state reading whose code the
   * master data does not name (its time counts as UNKNOWN, as for any unusable state).
   */
  boolean apply(Master master, long tMs, String tag, Double value, String text, String quality) {
    boolean good = "GOOD".equals(quality);
    window(tMs);
    if (good) {
      liveUntilMs = Math.max(liveUntilMs, tMs + staleAfterMs);
    }
    if (tag.equals(master.stateTag)) {
      String code = text != null ? text : code(value);
      boolean usable = good && code != null && !code.isEmpty();
      Integer known = usable ? master.stateCodes.get(code) : null;
      category = known != null ? known : UNKNOWN;
      return known != null || !usable;
    } else if (good
        && value != null
        && (tag.equals(master.totalCountTag) || tag.equals(master.goodCountTag))) {
      Double previous = lastCounter.put(tag, value);
      if (previous != null) {
        double v = value;
        // Python's round(): half to even
        long delta = (long) (v >= previous ? Math.rint(v - previous) : Math.rint(v));
        WindowAcc acc = window(tMs);
        if (tag.equals(master.totalCountTag)) {
          acc.total += delta;
        } else {
          acc.good += delta;
        }
      }
    }
    return true;
  }

  /** Advance to t and hand back every window that ends at or before t, oldest first. */
  List<WindowAcc> closeUntil(long tMs) {
    advanceTo(tMs);
    List<WindowAcc> done = new ArrayList<>(1);
    Iterator<Map.Entry<Long, WindowAcc>> it = windows.entrySet().iterator();
    while (it.hasNext()) {
      Map.Entry<Long, WindowAcc> e = it.next();
      if (e.getKey() + windowMs > tMs) {
        break;
      }
      done.add(e.getValue());
      it.remove();
    }
    return done;
  }

  /** Whether known time (not just UNKNOWN) reaches into the window after windowEnd. */
  boolean wantsNextWindow(long windowEndMs) {
    return liveUntilMs > windowEndMs;
  }

  private WindowAcc window(long tMs) {
    long start = tMs - Math.floorMod(tMs, windowMs);
    WindowAcc acc = windows.get(start);
    if (acc == null) {
      acc = new WindowAcc(start);
      windows.put(start, acc);
    }
    return acc;
  }

  private void attribute(long aMs, long bMs, int cat) {
    while (aMs < bMs) {
      WindowAcc acc = window(aMs);
      long end = Math.min(bMs, acc.startMs + windowMs);
      acc.durationsMs[cat] += end - aMs;
      aMs = end;
    }
  }

  /** Python's str() of a state code given as a number: "3" for 3.0, "2.5" for 2.5. */
  static String code(Double value) {
    if (value == null) {
      return null;
    }
    double v = value;
    if (v == Math.rint(v)) {
      return new BigDecimal(v).toBigInteger().toString();
    }
    // repr(float): the shortest round-trip digits, fixed notation for 1e-4 <= |v| < 1e16
    BigDecimal d = new BigDecimal(Double.toString(v)).stripTrailingZeros();
    int exponent = d.precision() - d.scale() - 1;
    if (exponent >= -4 && exponent < 16) {
      return d.toPlainString();
    }
    String digits = d.unscaledValue().abs().toString();
    StringBuilder s = new StringBuilder(v < 0 ? "-" : "").append(digits.charAt(0));
    if (digits.length() > 1) {
      s.append('.').append(digits, 1, digits.length());
    }
    s.append('e').append(exponent < 0 ? '-' : '+');
    int abs = Math.abs(exponent);
    return s.append(abs < 10 ? "0" : "").append(abs).toString();
  }

  // -- state -------------------------------------------------------------------------------

  byte[] toBytes() {
    try {
      ByteArrayOutputStream bytes = new ByteArrayOutputStream(64 + 48 * windows.size());
      DataOutputStream out = new DataOutputStream(bytes);
      out.writeByte(FORMAT);
      out.writeBoolean(started);
      out.writeLong(cursorMs);
      out.writeByte(category);
      out.writeLong(liveUntilMs);
      out.writeInt(lastCounter.size());
      for (Map.Entry<String, Double> e : lastCounter.entrySet()) {
        out.writeUTF(e.getKey());
        out.writeDouble(e.getValue());
      }
      out.writeInt(windows.size());
      for (WindowAcc acc : windows.values()) {
        out.writeLong(acc.startMs);
        for (long d : acc.durationsMs) {
          out.writeLong(d);
        }
        out.writeLong(acc.total);
        out.writeLong(acc.good);
      }
      out.flush();
      return bytes.toByteArray();
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
  }

  static Timeline fromBytes(byte[] data, long windowMs, long staleAfterMs) {
    Timeline t = new Timeline(windowMs, staleAfterMs);
    try {
      DataInputStream in = new DataInputStream(new ByteArrayInputStream(data));
      byte format = in.readByte();
      if (format != FORMAT) {
        throw new IllegalStateException("oee: timeline state format " + format + " is unknown");
      }
      t.started = in.readBoolean();
      t.cursorMs = in.readLong();
      t.category = in.readByte();
      t.liveUntilMs = in.readLong();
      for (int i = in.readInt(); i > 0; i--) {
        t.lastCounter.put(in.readUTF(), in.readDouble());
      }
      for (int i = in.readInt(); i > 0; i--) {
        WindowAcc acc = new WindowAcc(in.readLong());
        for (int c = 0; c < 4; c++) {
          acc.durationsMs[c] = in.readLong();
        }
        acc.total = in.readLong();
        acc.good = in.readLong();
        t.windows.put(acc.startMs, acc);
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return t;
  }
}
