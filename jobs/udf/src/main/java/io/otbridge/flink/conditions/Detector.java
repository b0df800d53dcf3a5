package io.otbridge.flink.conditions;

import static io.otbridge.flink.conditions.KeyState.NONE;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

/**
 * One rule of the rules file and its state machine: the JVM twin of detectors.py's detectors
 * (same transitions, same event times, same messages). The rule arrives as the JSON that
 * rules.py {@code rules_json} writes; it was validated there.
 *
 * <p>A detector keeps its state in one slot of the key's {@link KeyState}: {@link KeyState#LS}
 * longs, {@link KeyState#DS} doubles and one int of flags.
 */
abstract class Detector implements Serializable {
  private static final long serialVersionUID = 1L;

  static final String RAISED = "RAISED";
  static final String CLEARED = "CLEARED";

  // flags
  static final int F_RAISED = 1;
  static final int F_A = 2; // the nullable long at L_A is set (latch pending_since, ref/last ts)
  static final int F_PV = 4; // the latch's pending value is not None
  static final int F_B = 8; // the nullable long at L_B is set (rate prev_ts)
  static final int F_FAST = 16; // anomaly: the fast average is not None
  // longs
  static final int L_RAISED_TS = 0;
  static final int L_A = 1;
  static final int L_B = 2;
  // doubles
  static final int D_0 = 0;
  static final int D_1 = 1;
  static final int D_2 = 2;

  final String name;
  final String kind;
  final String severity;
  final long id;
  private final Pattern[] assets;
  private final Pattern[] tags;

  /** One transition (detectors.py Change). */
  static final class Change {
    final String status;
    final long eventTs;
    final Double value;
    final Double threshold;
    final String message;

    Change(String status, long eventTs, Double value, Double threshold, String message) {
      this.status = status;
      this.eventTs = eventTs;
      this.value = value;
      this.threshold = threshold;
      this.message = message;
    }
  }

  Detector(JsonNode rule) {
    name = rule.get("name").asText();
    kind = rule.get("kind").asText();
    severity = rule.get("severity").asText();
    id = id(name, kind);
    assets = globs(rule.get("match").get("asset"));
    tags = globs(rule.get("match").get("tag"));
  }

  static Detector of(JsonNode rule) {
    String kind = rule.get("kind").asText();
    switch (kind) {
      case "high":
      case "low":
        return new Limit(rule);
      case "rate":
        return new Rate(rule);
      case "flatline":
        return new Flatline(rule);
      case "stale":
        return new Stale(rule);
      case "bad_quality":
        return new BadQuality(rule);
      case "anomaly":
        return new Anomaly(rule);
      default:
        throw new IllegalArgumentException("unknown rule kind " + kind);
    }
  }

  /** Where the state lives (a rule that changes its kind starts over): FNV-1a of name, kind. */
  static long id(String name, String kind) {
    long h = 0xcbf29ce484222325L;
    String s = name + "\u0000" + kind;
    for (int i = 0; i < s.length(); i++) {
      h = (h ^ s.charAt(i)) * 0x100000001b3L;
    }
    return h;
  }

  /** fnmatchcase of `*` (anything, `/` included) and `?` (one character). */
  private static Pattern[] globs(JsonNode list) {
    Pattern[] out = new Pattern[list.size()];
    for (int i = 0; i < out.length; i++) {
      String glob = list.get(i).asText();
      StringBuilder re = new StringBuilder();
      int start = 0;
      for (int j = 0; j < glob.length(); j++) {
        char c = glob.charAt(j);
        if (c == '*' || c == '?') {
          if (j > start) {
            re.append(Pattern.quote(glob.substring(start, j)));
          }
          re.append(c == '*' ? ".*" : ".");
          start = j + 1;
        }
      }
      if (start < glob.length()) {
        re.append(Pattern.quote(glob.substring(start)));
      }
      out[i] = Pattern.compile(re.toString(), Pattern.DOTALL);
    }
    return out;
  }

  boolean matches(String asset, String tag) {
    return any(assets, asset) && any(tags, tag);
  }

  private static boolean any(Pattern[] globs, String text) {
    for (Pattern p : globs) {
      if (p.matcher(text).matches()) {
        return true;
      }
    }
    return false;
  }

  static long ms(double seconds) {
    return (long) Math.rint(seconds * 1000); // Python's round(): half to even
  }

  static String secondsText(double seconds) {
    return PyFormat.g(seconds);
  }

  /** A sample (value null for None); changes are appended to out (created when needed). */
  abstract List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
      String unit, List<Change> out);

  /** Fire the deadlines up to now. */
  List<Change> advance(KeyState s, int slot, long now, String unit, List<Change> out) {
    return out;
  }

  /** The pending deadline, NONE if there is none. */
  long deadline(KeyState s, int slot) {
    return NONE;
  }

  static List<Change> add(List<Change> out, Change c) {
    if (out == null) {
      out = new ArrayList<>(2);
    }
    out.add(c);
    return out;
  }

  static boolean flag(KeyState s, int slot, int f) {
    return (s.flags[slot] & f) != 0;
  }

  static void set(KeyState s, int slot, int f, boolean on) {
    s.flags[slot] = on ? s.flags[slot] | f : s.flags[slot] & ~f;
  }

  static int li(int slot, int field) {
    return slot * KeyState.LS + field;
  }

  static int di(int slot, int field) {
    return slot * KeyState.DS + field;
  }

  /** A detector that is a latch over a per-sample condition (detectors.py _Latched, Latch). */
  abstract static class Latched extends Detector {
    private static final long serialVersionUID = 1L;
    final long onMs;
    final long offMs;

    Latched(JsonNode rule, double onDelayS, double offDelayS) {
      super(rule);
      onMs = ms(onDelayS);
      offMs = ms(offDelayS);
    }

    /** (value, threshold, message) of a transition. */
    abstract Change describe(String status, long ts, Double value, String unit);

    @Override
    long deadline(KeyState s, int slot) {
      if (!flag(s, slot, F_A)) {
        return NONE;
      }
      return s.l[li(slot, L_A)] + (flag(s, slot, F_RAISED) ? offMs : onMs);
    }

    @Override
    List<Change> advance(KeyState s, int slot, long now, String unit, List<Change> out) {
      long due = deadline(s, slot);
      if (due == NONE || due > now) {
        return out;
      }
      set(s, slot, F_A, false);
      boolean raised = !flag(s, slot, F_RAISED);
      set(s, slot, F_RAISED, raised);
      if (raised) {
        s.l[li(slot, L_RAISED_TS)] = due;
      }
      Double value = flag(s, slot, F_PV) ? s.d[di(slot, D_0)] : null;
      return add(out, describe(raised ? RAISED : CLEARED, due, value, unit));
    }

    /** Latch.update: active starts/continues a raise, inactive a clear, neither breaks one. */
    List<Change> feed(KeyState s, int slot, long ts, boolean active, boolean inactive,
        Double value, String unit, List<Change> out) {
      boolean wanted = flag(s, slot, F_RAISED) ? inactive : active;
      if (!wanted) {
        set(s, slot, F_A, false);
        return out;
      }
      if (!flag(s, slot, F_A)) {
        set(s, slot, F_A, true);
        s.l[li(slot, L_A)] = ts;
      }
      set(s, slot, F_PV, value != null);
      s.d[di(slot, D_0)] = value == null ? 0.0 : value;
      return advance(s, slot, ts, unit, out);
    }
  }

  static final class Limit extends Latched {
    private static final long serialVersionUID = 1L;
    final boolean high;
    final double limit;
    final double hysteresis;
    final double clearLevel;
    final double onDelayS;
    final double offDelayS;

    Limit(JsonNode rule) {
      super(rule, rule.get("on_delay_s").asDouble(), rule.get("off_delay_s").asDouble());
      high = kind.equals("high");
      limit = rule.get("limit").asDouble();
      hysteresis = rule.get("hysteresis").asDouble();
      clearLevel = high ? limit - hysteresis : limit + hysteresis;
      onDelayS = rule.get("on_delay_s").asDouble();
      offDelayS = rule.get("off_delay_s").asDouble();
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      if (value == null || !quality.equals("GOOD")) {
        return out; // BAD/UNCERTAIN samples neither raise nor clear nor break an on-delay
      }
      double v = value;
      boolean active = high ? v > limit : v < limit;
      boolean inactive = high ? v < clearLevel : v > clearLevel;
      return feed(s, slot, ts, active, inactive, value, unit, out);
    }

    @Override
    Change describe(String status, long ts, Double value, String unit) {
      if (status.equals(RAISED)) {
        String held = onDelayS != 0 ? " for " + PyFormat.g(onDelayS) + " s" : "";
        String op = high ? ">" : "<";
        return new Change(status, ts, value, limit,
            PyFormat.v(value, unit) + " " + op + " " + PyFormat.g(limit) + held);
      }
      String op = high ? "<" : ">";
      String held = offDelayS != 0 ? " for " + PyFormat.g(offDelayS) + " s" : "";
      return new Change(status, ts, value, clearLevel,
          PyFormat.v(value, unit) + " back " + op + " " + PyFormat.g(clearLevel) + held
              + " (limit " + PyFormat.g(limit) + ", hysteresis " + PyFormat.g(hysteresis) + ")");
    }
  }

  static final class Rate extends Latched {
    private static final long serialVersionUID = 1L;
    final double limit;
    final double clearLevel;
    final int direction; // 0 both, 1 rising, 2 falling

    Rate(JsonNode rule) {
      super(rule, rule.get("on_delay_s").asDouble(), rule.get("off_delay_s").asDouble());
      limit = rule.get("limit").asDouble();
      clearLevel = limit - rule.get("hysteresis").asDouble();
      String dir = rule.get("direction").asText();
      direction = dir.equals("both") ? 0 : dir.equals("rising") ? 1 : 2;
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      if (value == null || !quality.equals("GOOD")) {
        return out;
      }
      boolean hadPrev = flag(s, slot, F_B);
      long prevTs = s.l[li(slot, L_B)];
      double prevValue = s.d[di(slot, D_1)];
      set(s, slot, F_B, true);
      s.l[li(slot, L_B)] = ts;
      s.d[di(slot, D_1)] = value;
      if (!hadPrev || ts <= prevTs) {
        return out;
      }
      double rate = (value - prevValue) * 1000.0 / (double) (ts - prevTs);
      double seen = direction == 0 ? Math.abs(rate) : direction == 1 ? rate : -rate;
      return feed(s, slot, ts, seen > limit, seen < clearLevel, rate, unit, out);
    }

    @Override
    Change describe(String status, long ts, Double value, String unit) {
      String perS = unit.isEmpty() ? "/s" : unit + "/s";
      if (status.equals(RAISED)) {
        return new Change(status, ts, value, limit, "changing at " + PyFormat.g(value) + " "
            + perS + ", limit " + PyFormat.g(limit) + " " + perS);
      }
      return new Change(status, ts, value, clearLevel, "changing at " + PyFormat.g(value) + " "
          + perS + ", back below " + PyFormat.g(clearLevel));
    }
  }

  static final class BadQuality extends Latched {
    private static final long serialVersionUID = 1L;
    final String[] qualities;
    final String joined;
    final double onDelayS;

    BadQuality(JsonNode rule) {
      super(rule, rule.get("on_delay_s").asDouble(), rule.get("off_delay_s").asDouble());
      JsonNode q = rule.get("qualities");
      qualities = new String[q.size()];
      for (int i = 0; i < qualities.length; i++) {
        qualities[i] = q.get(i).asText();
      }
      joined = String.join("/", qualities);
      onDelayS = rule.get("on_delay_s").asDouble();
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      boolean bad = false;
      for (String q : qualities) {
        bad |= q.equals(quality);
      }
      return feed(s, slot, ts, bad, !bad, value, unit, out);
    }

    @Override
    Change describe(String status, long ts, Double value, String unit) {
      if (status.equals(RAISED)) {
        String held = onDelayS != 0 ? " for " + PyFormat.g(onDelayS) + " s" : "";
        return new Change(status, ts, value, null, "quality " + joined + held);
      }
      return new Change(status, ts, value, null, "quality no longer " + joined);
    }
  }

  /** flags F_RAISED, F_A (ref_ts set); L_A ref_ts; D_0 ref_value. */
  static final class Flatline extends Detector {
    private static final long serialVersionUID = 1L;
    final double durationS;
    final long durationMs;
    final double epsilon;

    Flatline(JsonNode rule) {
      super(rule);
      durationS = rule.get("duration_s").asDouble();
      durationMs = ms(durationS);
      epsilon = rule.get("epsilon").asDouble();
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      if (value == null || !quality.equals("GOOD")) {
        return out;
      }
      boolean hasRef = flag(s, slot, F_A);
      long refTs = s.l[li(slot, L_A)];
      double refValue = s.d[di(slot, D_0)];
      if (!hasRef || Math.abs(value - refValue) > epsilon) {
        if (flag(s, slot, F_RAISED)) {
          set(s, slot, F_RAISED, false);
          double after = hasRef && refTs != 0 ? (double) (ts - refTs) / 1000 : 0;
          out = add(out, new Change(CLEARED, ts, value, durationS, "moving again: "
              + PyFormat.v(value, unit) + " after " + PyFormat.g(after) + " s at "
              + PyFormat.g(refValue)));
        }
        set(s, slot, F_A, true);
        s.l[li(slot, L_A)] = ts;
        s.d[di(slot, D_0)] = value;
      } else if (!flag(s, slot, F_RAISED) && ts - refTs >= durationMs) {
        set(s, slot, F_RAISED, true);
        s.l[li(slot, L_RAISED_TS)] = ts;
        out = add(out, new Change(RAISED, ts, refValue, durationS, "stuck at "
            + PyFormat.v(refValue, unit) + " (within " + PyFormat.g(epsilon) + ") for "
            + PyFormat.g((double) (ts - refTs) / 1000) + " s"));
      }
      return out;
    }
  }

  /** flags F_RAISED, F_A (last_ts set); L_A last_ts. */
  static final class Stale extends Detector {
    private static final long serialVersionUID = 1L;
    final double timeoutS;
    final long timeoutMs;

    Stale(JsonNode rule) {
      super(rule);
      timeoutS = rule.get("timeout_s").asDouble();
      timeoutMs = ms(timeoutS);
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      if (flag(s, slot, F_RAISED)) {
        set(s, slot, F_RAISED, false);
        double silent = flag(s, slot, F_A) ? (double) (ts - s.l[li(slot, L_A)]) / 1000 : 0;
        out = add(out, new Change(CLEARED, ts, value, timeoutS,
            "data again after " + PyFormat.g(silent) + " s of silence"));
      }
      set(s, slot, F_A, true);
      s.l[li(slot, L_A)] = ts;
      return out;
    }

    @Override
    long deadline(KeyState s, int slot) {
      if (flag(s, slot, F_RAISED) || !flag(s, slot, F_A)) {
        return NONE;
      }
      return s.l[li(slot, L_A)] + timeoutMs;
    }

    @Override
    List<Change> advance(KeyState s, int slot, long now, String unit, List<Change> out) {
      long due = deadline(s, slot);
      if (due == NONE || due > now) {
        return out;
      }
      set(s, slot, F_RAISED, true);
      s.l[li(slot, L_RAISED_TS)] = due;
      return add(out, new Change(RAISED, due, null, timeoutS,
          "no reading for " + PyFormat.g(timeoutS) + " s"));
    }
  }

  /** flags F_RAISED, F_FAST; L_A n, L_B streak; D_0 mean, D_1 var, D_2 fast. */
  static final class Anomaly extends Detector {
    private static final long serialVersionUID = 1L;
    final double alpha;
    final double smoothing;
    final long warmupSamples;
    final double threshold;
    final double learnThreshold;
    final double clearThreshold;
    final long consecutive;
    final int direction; // 0 high, 1 low, 2 both
    final double minStd;
    final Double minValue;
    final Double maxValue;
    final double fastNoise;

    Anomaly(JsonNode rule) {
      super(rule);
      alpha = rule.get("alpha").asDouble();
      smoothing = rule.get("smoothing").asDouble();
      warmupSamples = rule.get("warmup_samples").asLong();
      threshold = rule.get("threshold").asDouble();
      learnThreshold = rule.get("learn_threshold").asDouble();
      clearThreshold = rule.get("clear_threshold").asDouble();
      consecutive = rule.get("consecutive").asLong();
      String dir = rule.get("direction").asText();
      direction = dir.equals("high") ? 0 : dir.equals("low") ? 1 : 2;
      minStd = rule.get("min_std").asDouble();
      minValue = optional(rule.get("min_value"));
      maxValue = optional(rule.get("max_value"));
      fastNoise = Math.sqrt(smoothing / (2.0 - smoothing));
    }

    private static Double optional(JsonNode node) {
      return node == null || node.isNull() ? null : node.asDouble();
    }

    private void learn(KeyState s, int slot, double value) {
      long n = ++s.l[li(slot, L_A)];
      // a plain running mean/variance at first, exponentially weighted once n > 1/alpha
      double a = PyFormat.max(alpha, 1.0 / n);
      double mean = s.d[di(slot, D_0)];
      double diff = value - mean;
      double incr = a * diff;
      s.d[di(slot, D_0)] = mean + incr;
      s.d[di(slot, D_1)] = (1.0 - a) * (s.d[di(slot, D_1)] + diff * incr);
    }

    @Override
    List<Change> sample(KeyState s, int slot, long ts, Double value, String quality,
        String unit, List<Change> out) {
      if (value == null || !quality.equals("GOOD")) {
        return out;
      }
      double v = value;
      if ((minValue != null && v < minValue) || (maxValue != null && v > maxValue)) {
        s.l[li(slot, L_B)] = 0;
        return out;
      }
      int fi = di(slot, D_2);
      if (s.l[li(slot, L_A)] < warmupSamples) {
        s.d[fi] = flag(s, slot, F_FAST) ? s.d[fi] + smoothing * (v - s.d[fi]) : v;
        set(s, slot, F_FAST, true);
        learn(s, slot, v);
        return out;
      }
      double mean = s.d[di(slot, D_0)];
      double std = Math.sqrt(s.d[di(slot, D_1)]);
      // winsorized at the threshold: one wild sample moves neither average far
      double limit = threshold * PyFormat.max(std, minStd);
      double valueW = PyFormat.min(PyFormat.max(v, mean - limit), mean + limit);
      s.d[fi] = flag(s, slot, F_FAST) ? s.d[fi] + smoothing * (valueW - s.d[fi]) : valueW;
      set(s, slot, F_FAST, true);
      double fast = s.d[fi];
      double fastOr0 = fast != 0.0 ? fast : 0.0; // Python's `fast or 0.0` (-0.0 is falsy)
      double z = (fastOr0 - mean) / (PyFormat.max(std, minStd) * fastNoise);
      double seen = direction == 0 ? z : direction == 1 ? -z : Math.abs(z);
      if (!flag(s, slot, F_RAISED)) {
        int si = li(slot, L_B);
        s.l[si] = seen > threshold ? s.l[si] + 1 : 0;
        if (s.l[si] >= consecutive) {
          set(s, slot, F_RAISED, true);
          s.l[li(slot, L_RAISED_TS)] = ts;
          s.l[si] = 0;
          out = add(out, new Change(RAISED, ts, value, threshold, "z-score " + PyFormat.f2(z)
              + " for " + consecutive + " samples: " + PyFormat.v(value, unit) + ", average "
              + PyFormat.g(fast) + " vs baseline " + PyFormat.g(mean) + " +- "
              + PyFormat.g(std)));
        }
      } else if (seen < clearThreshold) {
        set(s, slot, F_RAISED, false);
        out = add(out, new Change(CLEARED, ts, value, clearThreshold, "z-score "
            + PyFormat.f2(z) + ": average " + PyFormat.g(fast) + " back near baseline "
            + PyFormat.g(mean)));
      }
      // the baseline learns normal samples only: nothing while raised or unusual
      if (!flag(s, slot, F_RAISED) && Math.abs(z) <= learnThreshold) {
        learn(s, slot, valueW);
      }
      return out;
    }
  }
}
