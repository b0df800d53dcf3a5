package io.otbridge.flink.oee;

import java.util.Collections;
import java.util.HashMap;
import java.util.Map;

/** What the OEE function needs of an asset's master data (iiot.assets): jobs/oee/timeline.py Master. */
final class Master {
  final Double idealCycleTimeS;
  final String stateTag;
  final String totalCountTag;
  final String goodCountTag;
  /** state code (as text) -> one of Timeline's categories */
  final Map<String, Integer> stateCodes;

  Master(
      Double idealCycleTimeS,
      String stateTag,
      String totalCountTag,
      String goodCountTag,
      Map<String, String> stateCodes) {
    this.idealCycleTimeS = idealCycleTimeS;
    this.stateTag = orDefault(stateTag, "state");
    this.totalCountTag = orDefault(totalCountTag, "count_total");
    this.goodCountTag = orDefault(goodCountTag, "count_good");
    Map<String, Integer> codes = new HashMap<>();
    if (stateCodes != null) {
      stateCodes.forEach((code, category) -> codes.put(code, Timeline.category(category)));
    }
    this.stateCodes = Collections.unmodifiableMap(codes);
  }

  private static String orDefault(String s, String fallback) {
    return s == null || s.isEmpty() ? fallback : s;
  }
}
