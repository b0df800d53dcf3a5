package io.otbridge.flink.conditions;

/**
 * Everything the conditions function keeps for one asset + tag (detectors.py KeyState), as
 * Flink state: plain fields and primitive arrays, no per-reading serialization of our own. Slot
 * i holds the state of the detector with rule id {@code ids[i]}: {@code flags[i]}, longs {@code
 * l[i*LS .. i*LS+LS-1]} and doubles {@code d[i*DS .. i*DS+DS-1]} (see {@link Detector}).
 */
public class KeyState {
  /** None, for the nullable timestamps. */
  public static final long NONE = Long.MIN_VALUE;

  static final int LS = 3;
  static final int DS = 3;

  /** The last reading applied (older ones are skipped), NONE before the first. */
  public long lastTs = NONE;
  /** The unit of the last reading that had one. */
  public String unit = "";
  /** The earliest event-time timer registered, NONE if none (bookkeeping). */
  public long timer = NONE;

  public long[] ids;
  public int[] flags;
  public long[] l;
  public double[] d;

  public KeyState() {}

  /** A state of n fresh slots. */
  void resize(long[] newIds) {
    long[] oldIds = ids;
    int[] oldFlags = flags;
    long[] oldL = l;
    double[] oldD = d;
    int n = newIds.length;
    ids = newIds.clone();
    flags = new int[n];
    l = new long[n * LS];
    d = new double[n * DS];
    if (oldIds == null) {
      return;
    }
    // restarted with other rules: keep the state of the rules still there, forget the others
    for (int i = 0; i < n; i++) {
      for (int j = 0; j < oldIds.length; j++) {
        if (oldIds[j] == newIds[i]) {
          flags[i] = oldFlags[j];
          System.arraycopy(oldL, j * LS, l, i * LS, LS);
          System.arraycopy(oldD, j * DS, d, i * DS, DS);
          break;
        }
      }
    }
  }
}
