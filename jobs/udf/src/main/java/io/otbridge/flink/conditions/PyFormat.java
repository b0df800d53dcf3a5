package io.otbridge.flink.conditions;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;

/**
 * Python's float formatting, exactly, for the alert messages detectors.py writes: {@code
 * f"{x:g}"} / {@code f"{x:.6g}"} and {@code f"{x:.2f}"}. Both round the exact binary value half to
 * even (Java's {@code %g} and {@code %.2f} round its shortest decimal half up, and {@code %g}
 * neither strips zeros nor switches notation where Python does).
 */
public final class PyFormat {
  private PyFormat() {}

  /** {@code f"{x:g}"}: 6 significant digits. */
  public static String g(double x) {
    return g(x, 6);
  }

  /** {@code f"{x:.{p}g}"} for p >= 1. */
  public static String g(double x, int p) {
    if (Double.isNaN(x)) {
      return "nan";
    }
    if (Double.isInfinite(x)) {
      return x > 0 ? "inf" : "-inf";
    }
    boolean negative = x < 0 || (x == 0 && 1 / x < 0);
    String body;
    if (x == 0) {
      body = "0";
    } else {
      BigDecimal rounded = new BigDecimal(Math.abs(x)).round(new MathContext(p, RoundingMode.HALF_EVEN));
      int exp = rounded.precision() - rounded.scale() - 1; // as "e" with p - 1 digits would show
      String digits = rounded.unscaledValue().toString();
      int end = digits.length();
      while (end > 1 && digits.charAt(end - 1) == '0') {
        end--;
      }
      digits = digits.substring(0, end);
      if (exp >= -4 && exp < p) {
        if (exp < 0) {
          body = "0." + "0".repeat(-exp - 1) + digits;
        } else if (digits.length() <= exp + 1) {
          body = digits + "0".repeat(exp + 1 - digits.length());
        } else {
          body = digits.substring(0, exp + 1) + "." + digits.substring(exp + 1);
        }
      } else {
        int abs = Math.abs(exp);
        body = digits.charAt(0) + (digits.length() > 1 ? "." + digits.substring(1) : "")
            + (exp < 0 ? "e-" : "e+") + (abs < 10 ? "0" : "") + abs;
      }
    }
    return negative ? "-" + body : body;
  }

  /** {@code f"{x:.2f}"}. */
  public static String f2(double x) {
    if (Double.isNaN(x)) {
      return "nan";
    }
    if (Double.isInfinite(x)) {
      return x > 0 ? "inf" : "-inf";
    }
    boolean negative = x < 0 || (x == 0 && 1 / x < 0);
    String body = new BigDecimal(Math.abs(x)).setScale(2, RoundingMode.HALF_EVEN).toPlainString();
    return negative ? "-" + body : body;
  }

  /** detectors.py {@code _g}: "null" for None. */
  static String g(Double x) {
    return x == null ? "null" : g(x.doubleValue());
  }

  /** detectors.py {@code _v}: a value with its unit, if it has one. */
  static String v(Double x, String unit) {
    return unit.isEmpty() ? g(x) : g(x) + " " + unit;
  }

  /** Python's max(a, b): a unless b > a. */
  static double max(double a, double b) {
    return b > a ? b : a;
  }

  /** Python's min(a, b): a unless b < a. */
  static double min(double a, double b) {
    return b < a ? b : a;
  }
}
